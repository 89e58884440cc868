"""The preprocessing job: raw documents -> sharded TFRecords + vocabularies + metadata.

    ReadRawRecords -> ParseDocuments -> CleanAndEncode -+-> WriteExamples -------+
    (batches)            |   ^                           +-> ComputeVocabulary --+
                         |   FindRepeats (ids, dedupe)   +-> ComputeStatistics --+-> WriteMetadata
                         +-> WriteDeadLetters <-- (empty after cleaning) --------+   (+ report)

Every element is a batch from the reader on; nothing holds the corpus: the
only grouping steps see file names, per-shard token tables, statistics and
documents whose id or text repeats. The same graph runs on the
DirectRunner and on Dataflow or Flink: only the pipeline options differ.

A run is all or nothing (`run_preprocess`): the inputs are checked before
any work (`preflight`), the job writes into a staging folder beside
``data/``, and only once its metadata and data report are complete does
the staging folder replace ``data/``. A killed or failed run, or one whose
data the report rejects, leaves the previous dataset exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import preflight, transforms
from beam_preprocess.combiners import FieldCountsFn, length_summary
from doctags_core import beam_io, data_checks, progress, records, schema
from doctags_core.config import Config, config_to_dict, config_to_yaml
from doctags_core.labels import label_vocabulary
from doctags_core.splits import SPLITS

log = logging.getLogger(__name__)

STAGING_PREFIX = ".data-staging-"  # a run in progress (or killed): removed by the next run
OLD_PREFIX = ".data-old-"  # the previous dataset while it is being swapped out


def _write_text(path: str, text: str) -> str:
    """Writes ``text``; returns its SHA-256 (recorded in metadata.json)."""
    data = text.encode("utf-8")
    with FileSystems.create(path) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def new_run_id() -> str:
    """``20260102T030405Z-1a2b3c4d``: when the run started, plus 32 random bits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def labeled_pool_counts(stats) -> Counter:
    """Label counts over train + validation, never test.

    The label set may use every labelled training document: validation is
    carved out of train, and a rare label may have landed only there.
    """
    pool: Counter = Counter()
    for split in ("train", "validation"):
        pool.update(stats["labels"].get(split, {}))
    return pool


def field_summary(counts: dict, cfg: Config) -> dict:
    """How often each configured field was there, from `records.observe_rows` counts."""
    d = cfg.data
    configured = [*d.text_fields, d.label_field, d.id_field, d.split_field]
    return {
        "records": int(counts.get("rows", 0)),
        "present": {f: int(counts.get(f"present:{f}", 0)) for f in configured if f},
        "with_text": {f: int(counts.get(f"text:{f}", 0)) for f in d.text_fields},
        "seen": {k[len("key:") :]: int(v) for k, v in counts.items() if k.startswith("key:")},
    }


def dead_letter_summary(dead_counts: dict, examples: dict | None) -> dict:
    """Totals by reason, and one example (source and detail) of each reason."""
    return {
        "total": int(sum(dead_counts.values())),
        "by_reason": dict(sorted(dead_counts.items())),
        "examples": {
            reason: {"source": source, "detail": detail}
            for reason, (source, detail) in sorted((examples or {}).items())
        },
    }


def build_metadata(
    top_tokens,
    stats,
    dead_counts,
    records_read,
    cfg: Config,
    written: dict | None = None,
    field_counts: dict | None = None,
    dead_examples: dict | None = None,
    run_id: str = "",
    runner: str = "",
) -> dict:
    """Assembles the run summary written as metadata.json."""
    documents = {split: int(stats["documents"].get(split, 0)) for split in SPLITS}
    good = sum(documents.values())
    dead = dead_letter_summary(dead_counts, dead_examples)
    train_labels = labeled_pool_counts(stats)
    label_counts = {
        label: {split: int(stats["labels"].get(split, {}).get(label, 0)) for split in SPLITS}
        for label in sorted({lb for counts in stats["labels"].values() for lb in counts})
    }
    return {
        "name": cfg.name,
        "run_id": run_id,
        "runner": runner,
        "records_read": int(records_read),
        "documents": {**documents, "total": good},
        "dead_letter": dead,
        "all_records_accounted_for": good + dead["total"] == records_read,
        "duplicates_removed": int(dead_counts.get(records.DUPLICATE, 0)),
        "duplicate_ids": int(dead_counts.get(records.DUPLICATE_ID, 0)),
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
        "train_token_lengths": length_summary(stats["train_length_histogram"]),
        "empty_after_cleaning": int(dead_counts.get(records.EMPTY_AFTER_CLEANING, 0)),
        "truncated_documents": int(stats.get("truncated", 0)),
        "max_chars": cfg.preprocess.max_chars,
        "fields": field_summary(field_counts or {}, cfg),
        "cleaning_steps": list(cfg.cleaning.steps),
        "config": config_to_dict(cfg),
    }


def write_metadata(
    _,
    top_tokens,
    stats,
    dead_counts,
    records_read,
    written,
    field_counts,
    dead_examples,
    cfg: Config,
    data_dir: str,
    run_id: str,
    runner: str,
) -> dict:
    """Writes vocabularies, label files, the config, the data report, then metadata.json.

    metadata.json comes last and records the run id and the SHA-256 of every
    file written before it: it is what makes the folder a complete dataset,
    and what `data_files.check_dataset` verifies.
    """
    digests = {}
    digests[schema.VOCAB_FILE] = _write_text(
        os.path.join(data_dir, schema.VOCAB_FILE),
        "".join(token.decode("utf-8") + "\n" for _, token, _ in top_tokens),
    )
    digests[schema.VOCAB_COUNTS_FILE] = _write_text(
        os.path.join(data_dir, schema.VOCAB_COUNTS_FILE),
        "token\tcount\tdocument_count\n"
        + "".join(f"{t.decode('utf-8')}\t{n}\t{df}\n" for n, t, df in top_tokens),
    )
    labels = label_vocabulary(labeled_pool_counts(stats))
    digests[schema.LABELS_FILE] = _write_text(
        os.path.join(data_dir, schema.LABELS_FILE), "".join(f"{lb}\n" for lb in labels)
    )
    metadata = build_metadata(
        top_tokens,
        stats,
        dead_counts,
        records_read,
        cfg,
        written,
        field_counts,
        dead_examples,
        run_id,
        runner,
    )
    digests[schema.LABEL_COUNTS_FILE] = _write_text(
        os.path.join(data_dir, schema.LABEL_COUNTS_FILE),
        "label\t"
        + "\t".join(SPLITS)
        + "\n"
        + "".join(
            f"{lb}\t" + "\t".join(str(c[s]) for s in SPLITS) + "\n"
            for lb, c in sorted(metadata["label_counts"].items(), key=lambda kv: -kv[1]["train"])
        ),
    )
    _write_text(os.path.join(data_dir, "config.yaml"), config_to_yaml(cfg))
    report = data_checks.check_data(metadata, cfg)
    _write_text(os.path.join(data_dir, schema.REPORT_FILE), json.dumps(report, indent=2))
    metadata["report"] = {k: report[k] for k in ("errors", "warnings")}
    metadata["files"] = digests
    _write_text(os.path.join(data_dir, schema.METADATA_FILE), json.dumps(metadata, indent=2))
    return metadata


def _example_of_reason(letter: dict):
    return letter["reason"], (letter.get("source", ""), letter.get("detail", ""))


def build_pipeline(
    pipeline: beam.Pipeline,
    cfg: Config,
    data_dir: str | None = None,
    run_id: str = "",
    runner: str = "",
) -> None:
    """Adds the whole preprocessing graph to ``pipeline``.

    Args:
        pipeline: The pipeline to add to.
        cfg: The experiment config.
        data_dir: Where to write (the staging folder); default ``cfg.data_dir``.
        run_id: Written into every shard name and into metadata.json.
        runner: The runner's name, recorded in metadata.json.
    """
    p = cfg.preprocess
    data_dir = data_dir or cfg.data_dir
    limit = records.TextLimit(p.max_chars, p.oversize)
    repeated_ids = duplicated = None
    if p.dedupe or p.duplicate_ids == "dead_letter":
        repeated_ids, duplicated = pipeline | "FindRepeats" >> transforms.FindRepeats(
            cfg.data,
            p.batch_size,
            limit,
            ids=p.duplicate_ids == "dead_letter",
            texts=p.dedupe,
        )
    read = pipeline | "ReadRawRecords" >> beam_io.ReadRawRecords(
        cfg.data, p.batch_size, p.max_record_bytes
    )
    records_read = (
        (
            read["records"] | "RecordsPerBatch" >> beam.Map(len),
            read[beam_io.DEAD_LETTER_TAG] | "OnePerReadError" >> beam.Map(lambda _: 1),
        )
        | "AllRecordCounts" >> beam.Flatten()
        | "CountRecordsRead" >> beam.CombineGlobally(sum)
    )
    parsed = read["records"] | "ParseDocuments" >> transforms.ParseDocuments(
        cfg.data, p.batch_size, duplicated, repeated_ids, limit
    )
    # Documents whose id or text repeats come out of their groups in a later
    # stage: they are encoded and written on their own, so that the main
    # stream runs from reading to writing in one fused stage (see ParseDocuments).
    branches = {"": parsed.docs}
    if parsed.kept is not None:
        branches["Kept"] = parsed.kept
    encoded = {
        name: docs
        | f"CleanAndEncode{name}" >> transforms.CleanAndEncode(cfg.cleaning.steps, cfg.data, p)
        for name, docs in branches.items()
    }
    dead_letters = (
        read[beam_io.DEAD_LETTER_TAG],
        parsed[beam_io.DEAD_LETTER_TAG],
        *(e[beam_io.DEAD_LETTER_TAG] for e in encoded.values()),
    ) | "AllDeadLetters" >> beam.Flatten()
    dead_counts = dead_letters | "WriteDeadLetters" >> beam_io.WriteDeadLetters(data_dir)
    dead_examples = (
        dead_letters
        | "ExampleOfReason" >> beam.Map(_example_of_reason)
        | "FirstExamplePerReason" >> beam.CombinePerKey(min)
        | "ExamplesToDict" >> beam.combiners.ToDict()
    )
    field_counts = parsed.field_counts | "CountFields" >> beam.CombineGlobally(FieldCountsFn())
    encoded_batches = tuple(e.batches for e in encoded.values())
    written = encoded_batches | "WriteExamples" >> transforms.WriteExamples(data_dir, p, run_id)
    vocabulary = tuple(
        e.token_counts for e in encoded.values()
    ) | "ComputeVocabulary" >> transforms.ComputeVocabulary(p)
    statistics = encoded_batches | "ComputeStatistics" >> transforms.ComputeStatistics()
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
            beam.pvalue.AsSingleton(field_counts),
            beam.pvalue.AsSingleton(dead_examples),
            cfg,
            data_dir,
            run_id,
            runner,
        )
    )


def pipeline_options(cfg: Config, beam_args: list[str] | None = None):
    """The job's options: the config's runner settings, then flags after ``--``."""
    p = cfg.preprocess
    return beam_io.pipeline_options(
        p.runner, p.direct_running_mode, p.direct_num_workers, beam_args
    )


# ---------------------------------------------------------------- publishing
def _is_local(path: str) -> bool:
    return "://" not in path


def _exists(path: str) -> bool:
    if _is_local(path):
        return os.path.exists(path)
    return bool(FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list)


def _dirs_matching(parent: str, prefix: str) -> list[str]:
    """Folders ``parent/prefix*``, local or on an object store (whose folders are prefixes)."""
    if _is_local(parent):
        if not os.path.isdir(parent):
            return []
        return sorted(
            os.path.join(parent, name)
            for name in os.listdir(parent)
            if name.startswith(prefix) and os.path.isdir(os.path.join(parent, name))
        )
    found = FileSystems.match([os.path.join(parent, prefix + "*", "**")])[0].metadata_list
    tops = {os.path.relpath(m.path, parent).split("/")[0] for m in found}
    return sorted(os.path.join(parent, top) for top in tops)


def _delete_dir(path: str) -> None:
    if _exists(path):
        FileSystems.delete([path if _is_local(path) else path.rstrip("/") + "/"])


def _move_dir(source: str, destination: str) -> None:
    """Renames a folder: one atomic rename locally; file by file on an object store.

    On an object store (no folder renames) metadata.json moves last, and a
    reader that catches the move half done is refused by
    `data_files.check_dataset` (shard run ids and file digests).
    """
    if _is_local(source):
        FileSystems.rename([source], [destination])
        return
    paths = [m.path for m in FileSystems.match([source.rstrip("/") + "/**"])[0].metadata_list]
    paths.sort(key=lambda p: p.endswith("/" + schema.METADATA_FILE))
    FileSystems.rename(
        paths, [destination.rstrip("/") + "/" + os.path.relpath(p, source) for p in paths]
    )


def clean_leftovers(cfg: Config) -> None:
    """Removes what killed runs left: staging folders, swap folders, old temp folders.

    A run killed between the two renames of `publish` leaves no ``data/``
    but the previous dataset in ``.data-old-*``: that one is put back first.
    """
    parent, data_dir = cfg.output_dir, cfg.data_dir
    olds = _dirs_matching(parent, OLD_PREFIX)
    if olds and not _exists(data_dir):
        log.warning("restoring the previous dataset from %s (a run was killed mid-swap)", olds[-1])
        _move_dir(olds.pop(), data_dir)
    stale = olds + _dirs_matching(parent, STAGING_PREFIX) + _dirs_matching(data_dir, ".temp-")
    for directory in stale:
        log.info("removing %s, left by an earlier run", directory)
        _delete_dir(directory)


def publish(staging: str, data_dir: str, run_id: str) -> None:
    """Puts a complete staging folder in place of ``data_dir`` (two renames)."""
    old = os.path.join(os.path.dirname(data_dir.rstrip("/")), OLD_PREFIX + run_id)
    if _exists(data_dir):
        _move_dir(data_dir, old)
    _move_dir(staging, data_dir)
    _delete_dir(old)


def staging_dir(cfg: Config, run_id: str) -> str:
    """Where a run writes until it is published."""
    return os.path.join(cfg.output_dir, STAGING_PREFIX + run_id)


def _read_metadata(data_dir: str) -> dict:
    with FileSystems.open(os.path.join(data_dir, schema.METADATA_FILE)) as f:
        return json.loads(f.read().decode("utf-8"))


def run_preprocess(
    cfg: Config,
    beam_args: list[str] | None = None,
    strict: bool = False,
    terminal: bool | None = None,
) -> dict:
    """Runs the Beam job to completion and publishes the dataset it wrote.

    Steps: check the inputs (`preflight`, a `ConfigError` before any work),
    remove leftovers of killed runs, run the job into a staging folder,
    check the data (`data_checks`), and only then put the staging folder in
    place of ``data/``.

    Args:
        cfg: The experiment config.
        beam_args: Pipeline flags given after ``--``.
        strict: Data-report warnings reject the dataset too.
        terminal: Whether a person watches stderr, for the progress line
            (None: ask stderr); otherwise progress is logged every 30 s.

    Returns:
        The metadata of the published dataset.

    Raises:
        ConfigError: an input problem found before any work.
        data_checks.DataRejected: the data report found errors (or, with
            ``strict``, warnings); the previous dataset is left in place
            and the rejected run's folder is kept for inspection.
    """
    files = preflight.check_inputs(cfg)
    clean_leftovers(cfg)
    run_id = new_run_id()
    staging = staging_dir(cfg, run_id)
    options = pipeline_options(cfg, beam_args)
    runner = beam_io.runner_name(options)
    log.info("preprocess run %s: %s -> %s", run_id, preflight.describe(files), cfg.data_dir)
    try:
        with progress.reporting("preprocess", terminal):
            with beam_io.make_pipeline(options) as pipeline:
                build_pipeline(pipeline, cfg, staging, run_id, runner)
        metadata = _read_metadata(staging)
    except BaseException:
        _delete_dir(staging)  # the previous dataset was never touched
        raise
    report = json.loads(
        FileSystems.open(os.path.join(staging, schema.REPORT_FILE)).read().decode("utf-8")
    )
    if data_checks.rejected(report, strict):
        raise data_checks.DataRejected(report, strict, staging, cfg.data_dir)
    publish(staging, cfg.data_dir, run_id)
    return metadata
