"""The preprocessing job: raw documents -> sharded TFRecords + vocabularies + metadata.

    ReadRawRecords -> ParseDocuments -> CleanAndEncode -+-> WriteExamples -------+
    (batches)            |   ^                           +-> ComputeVocabulary --+
                         |   FindDuplicates (dedupe)     +-> ComputeStatistics --+-> WriteMetadata
                         +-> WriteDeadLetters -----------------------------------+

Every element is a batch from the reader on; nothing holds the corpus: the
only grouping steps see file names, per-shard token tables, statistics and
(with dedupe) duplicated documents. The same graph runs on the DirectRunner
and on Dataflow or Flink: only the pipeline options differ.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import transforms
from beam_preprocess.combiners import length_summary
from doctags_core import beam_io, schema
from doctags_core.config import Config, config_to_dict, config_to_yaml
from doctags_core.labels import label_vocabulary
from doctags_core.splits import SPLITS

log = logging.getLogger(__name__)


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def labeled_pool_counts(stats) -> Counter:
    """Label counts over train + validation, never test.

    The label set may use every labelled training document: validation is
    carved out of train, and a rare label may have landed only there.
    """
    pool: Counter = Counter()
    for split in ("train", "validation"):
        pool.update(stats["labels"].get(split, {}))
    return pool


def build_metadata(
    top_tokens, stats, dead_counts, records_read, cfg: Config, written: dict | None = None
) -> dict:
    """Assembles the run summary written as metadata.json."""
    documents = {split: int(stats["documents"].get(split, 0)) for split in SPLITS}
    good = sum(documents.values())
    dead_total = int(sum(dead_counts.values()))
    train_labels = labeled_pool_counts(stats)
    label_counts = {
        label: {split: int(stats["labels"].get(split, {}).get(label, 0)) for split in SPLITS}
        for label in sorted({lb for counts in stats["labels"].values() for lb in counts})
    }
    return {
        "name": cfg.name,
        "records_read": int(records_read),
        "documents": {**documents, "total": good},
        "dead_letter": {"total": dead_total, "by_reason": dict(sorted(dead_counts.items()))},
        "all_records_accounted_for": good + dead_total == records_read,
        "duplicates_removed": int(dead_counts.get("duplicate", 0)),
        "examples_written": {s: int((written or {}).get(s, {}).get("examples", 0)) for s in SPLITS},
        "all_documents_written": written is not None
        and all(int(written.get(s, {}).get("examples", -1)) == documents[s] for s in SPLITS),
        "files_written": {s: int((written or {}).get(s, {}).get("files", 0)) for s in SPLITS},
        "vocabulary_size": len(top_tokens),
        "label_vocabulary_size": len(label_vocabulary(train_labels)),
        "labels_only_in_test": sorted(set(label_counts) - set(train_labels)),
        "label_counts": label_counts,
        "labels_per_document": {
            split: (stats["label_assignments"].get(split, 0) / documents[split])
            if documents[split]
            else 0.0
            for split in SPLITS
        },
        "token_lengths": length_summary(stats["length_histogram"]),
        "empty_after_cleaning": int(stats["empty_after_cleaning"]),
        "cleaning_steps": list(cfg.cleaning.steps),
        "config": config_to_dict(cfg),
    }


def write_metadata(_, top_tokens, stats, dead_counts, records_read, written, cfg: Config) -> dict:
    """Writes vocabularies, label files, metadata.json and the config."""
    data_dir = cfg.data_dir
    _write_text(
        os.path.join(data_dir, schema.VOCAB_FILE),
        "".join(token.decode("utf-8") + "\n" for _, token, _ in top_tokens),
    )
    _write_text(
        os.path.join(data_dir, schema.VOCAB_COUNTS_FILE),
        "token\tcount\tdocument_count\n"
        + "".join(f"{t.decode('utf-8')}\t{n}\t{df}\n" for n, t, df in top_tokens),
    )
    labels = label_vocabulary(labeled_pool_counts(stats))
    _write_text(os.path.join(data_dir, schema.LABELS_FILE), "".join(f"{lb}\n" for lb in labels))
    metadata = build_metadata(top_tokens, stats, dead_counts, records_read, cfg, written)
    _write_text(
        os.path.join(data_dir, schema.LABEL_COUNTS_FILE),
        "label\t"
        + "\t".join(SPLITS)
        + "\n"
        + "".join(
            f"{lb}\t" + "\t".join(str(c[s]) for s in SPLITS) + "\n"
            for lb, c in sorted(metadata["label_counts"].items(), key=lambda kv: -kv[1]["train"])
        ),
    )
    _write_text(os.path.join(data_dir, schema.METADATA_FILE), json.dumps(metadata, indent=2))
    _write_text(os.path.join(data_dir, "config.yaml"), config_to_yaml(cfg))
    return metadata


def build_pipeline(pipeline: beam.Pipeline, cfg: Config) -> None:
    """Adds the whole preprocessing graph to ``pipeline``."""
    p = cfg.preprocess
    read = pipeline | "ReadRawRecords" >> beam_io.ReadRawRecords(cfg.data, p.batch_size)
    records_read = (
        (
            read["records"] | "RecordsPerBatch" >> beam.Map(len),
            read[beam_io.DEAD_LETTER_TAG] | "OnePerReadError" >> beam.Map(lambda _: 1),
        )
        | "AllRecordCounts" >> beam.Flatten()
        | "CountRecordsRead" >> beam.CombineGlobally(sum)
    )
    duplicated = None
    if p.dedupe:
        duplicated = pipeline | "FindDuplicates" >> transforms.FindDuplicates(
            cfg.data, p.batch_size
        )
    parsed = read["records"] | "ParseDocuments" >> transforms.ParseDocuments(
        cfg.data, p.batch_size, duplicated
    )
    dead_counts = (
        (read[beam_io.DEAD_LETTER_TAG], parsed[beam_io.DEAD_LETTER_TAG])
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> beam_io.WriteDeadLetters(cfg.data_dir)
    )
    encoded = parsed.docs | "CleanAndEncode" >> transforms.CleanAndEncode(
        cfg.cleaning.steps, cfg.data, p
    )
    written = encoded.batches | "WriteExamples" >> transforms.WriteExamples(cfg.data_dir, p)
    vocabulary = encoded.token_counts | "ComputeVocabulary" >> transforms.ComputeVocabulary(p)
    statistics = encoded.batches | "ComputeStatistics" >> transforms.ComputeStatistics()
    _ = (
        pipeline
        | "MetadataTrigger" >> beam.Create([None])
        | "WriteMetadata"
        >> beam.Map(
            write_metadata,
            beam.pvalue.AsSingleton(vocabulary),
            beam.pvalue.AsSingleton(statistics),
            beam.pvalue.AsSingleton(dead_counts),
            beam.pvalue.AsSingleton(records_read),
            beam.pvalue.AsSingleton(written),
            cfg,
        )
    )


def pipeline_options(cfg: Config, beam_args: list[str] | None = None):
    """The job's options: the config's runner settings, then flags after ``--``."""
    p = cfg.preprocess
    return beam_io.pipeline_options(
        p.runner, p.direct_running_mode, p.direct_num_workers, beam_args
    )


def _clear_previous_output(data_dir: str) -> None:
    """Removes shards of an earlier run so stale files never match the globs."""
    for sub in (*SPLITS, schema.DEAD_LETTER_DIR):
        pattern = os.path.join(data_dir, sub, "*")
        matches = FileSystems.match([pattern])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])
    # temporary shard directories of a run that was killed before finalizing
    stale = FileSystems.match([os.path.join(data_dir, ".temp-*", "*")])[0].metadata_list
    for directory in sorted({os.path.dirname(m.path) for m in stale}):
        FileSystems.delete([directory])


def run_preprocess(cfg: Config, beam_args: list[str] | None = None) -> dict:
    """Runs the Beam job to completion and returns the metadata it wrote."""
    _clear_previous_output(cfg.data_dir)
    options = pipeline_options(cfg, beam_args)
    log.info("preprocess: %s -> %s", ", ".join(cfg.data.input_pattern), cfg.data_dir)
    with beam_io.make_pipeline(options) as pipeline:
        build_pipeline(pipeline, cfg)
    with FileSystems.open(os.path.join(cfg.data_dir, schema.METADATA_FILE)) as f:
        return json.loads(f.read().decode("utf-8"))
