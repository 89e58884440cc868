"""Named composite PTransforms of the preprocessing job.

Each composite wraps the pure functions of `records`, `batches` and
`combiners`; every step inside is labelled so that the job graph on any
runner reads like the pipeline description in the README.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import batches, combiners, records
from doctags_core import schema
from doctags_core.config import DataConfig, PreprocessConfig

DEAD_LETTER_TAG = "dead_letter"
NAMESPACE = "doctags"


def input_format(pattern: str, configured: str) -> str:
    """``jsonl`` or ``csv`` for one input pattern (from config, else extension)."""
    if configured != "auto":
        return configured
    name = pattern.lower()
    for suffix in (".gz", ".bz2", ".zst", ".deflate"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(
        f"data.format: cannot tell the format of {pattern!r} from its extension; "
        "set data.format to jsonl or csv"
    )


class _ReadCsvFile(beam.DoFn):
    def process(self, readable_file):
        path = readable_file.metadata.path
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as stream:
            for row, dead in records.iter_csv_rows(stream, path):
                if dead is not None:
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead)
                else:
                    yield path, row


class ReadRawRecords(beam.PTransform):
    """Reads every input file into ``(source, raw)`` records.

    JSONL lines are read as bytes (not decoded) so that a line with invalid
    UTF-8 becomes a dead letter instead of crashing the reader. CSV files are
    parsed whole by the csv module, so quoted newlines work; rows it cannot
    split go to the dead-letter output.
    """

    def __init__(self, cfg: DataConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, pbegin):
        raw, dead = [], []
        for i, pattern in enumerate(self._cfg.input_pattern):
            fmt = input_format(pattern, self._cfg.format)
            if fmt == "jsonl":
                raw.append(
                    pbegin
                    | f"ReadJsonl{i}"
                    >> beam.io.ReadFromTextWithFilename(pattern, coder=beam.coders.BytesCoder())
                )
            else:
                rows = (
                    pbegin
                    | f"MatchCsv{i}" >> fileio.MatchFiles(pattern)
                    | f"OpenCsv{i}" >> fileio.ReadMatches()
                    | f"ReadCsv{i}"
                    >> beam.ParDo(_ReadCsvFile()).with_outputs(DEAD_LETTER_TAG, main="rows")
                )
                raw.append(rows.rows)
                dead.append(rows[DEAD_LETTER_TAG])
        records_out = tuple(raw) | "FlattenRecords" >> beam.Flatten()
        dead_out = (
            tuple(dead) | "FlattenReadErrors" >> beam.Flatten()
            if dead
            else pbegin | "NoReadErrors" >> beam.Create([])
        )
        return {"records": records_out, DEAD_LETTER_TAG: dead_out}


class _ParseBatch(beam.DoFn):
    def __init__(self, cfg: DataConfig):
        self._cfg = cfg

    def process(self, record_batch):
        docs, dead = batches.parse_batch(record_batch, self._cfg)
        for letter in dead:
            beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{letter['reason']}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        if docs:
            beam.metrics.Metrics.counter(NAMESPACE, "documents_parsed").inc(len(docs))
            yield docs


class ParseDocuments(beam.PTransform):
    """Batches raw records and parses them; bad records go to ``dead_letter``."""

    def __init__(self, cfg: DataConfig, batch_size: int):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size

    def expand(self, raw_records):
        return (
            raw_records
            | "BatchRecords"
            >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
            | "ParseBatch"
            >> beam.ParDo(_ParseBatch(self._cfg)).with_outputs(DEAD_LETTER_TAG, main="docs")
        )


class _CleanBatch(beam.DoFn):
    def __init__(self, steps, cfg: DataConfig):
        self._steps = tuple(steps)
        self._cfg = cfg
        self._cleaner = None

    def setup(self):
        from doctags_core.cleaning import make_batch_cleaner

        self._cleaner = make_batch_cleaner(self._steps)

    def process(self, docs):
        yield batches.clean_batch(docs, self._cleaner, self._cfg)


class CleanAndTokenize(beam.PTransform):
    """Applies the shared TF cleaning to each batch and assigns splits."""

    def __init__(self, steps, cfg: DataConfig):
        super().__init__()
        self._steps = steps
        self._cfg = cfg

    def expand(self, doc_batches):
        return doc_batches | "CleanBatch" >> beam.ParDo(_CleanBatch(self._steps, self._cfg))


class _SerializeBySplit(beam.DoFn):
    def __init__(self, keep_raw_text: bool):
        self._keep_raw_text = keep_raw_text

    def process(self, batch):
        for split, example in batches.serialize_batch(batch, self._keep_raw_text):
            yield beam.pvalue.TaggedOutput(split, example)


class WriteExamples(beam.PTransform):
    """Writes gzip TFRecord shards of tf.train.Example, one directory per split."""

    def __init__(self, data_dir: str, cfg: PreprocessConfig):
        super().__init__()
        self._data_dir = data_dir
        self._cfg = cfg

    def expand(self, cleaned):
        by_split = cleaned | "SerializeBySplit" >> beam.ParDo(
            _SerializeBySplit(self._cfg.keep_raw_text)
        ).with_outputs(*schema_splits())
        for split in schema_splits():
            _ = by_split[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
                schema.split_prefix(self._data_dir, split),
                file_name_suffix=schema.RECORD_SUFFIX,
                num_shards=self._cfg.num_shards,
                compression_type=CompressionTypes.GZIP,
            )
        return by_split


def schema_splits():
    """The three split names, in output order."""
    from doctags_core.splits import SPLITS

    return SPLITS


class ComputeVocabulary(beam.PTransform):
    """Top-K train tokens by count, with document frequencies.

    Each batch is pre-aggregated into per-shard count dicts; shards are
    combined in parallel by key, pruned to their own top-K, and merged into
    the global top-K. No element is ever a single token.
    """

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, cleaned):
        cfg = self._cfg
        return (
            cleaned
            | "CountTokens" >> beam.FlatMap(batches.count_train_tokens, cfg.vocab_shards)
            | "MergeCountsPerShard" >> beam.CombinePerKey(combiners.MergeTokenCountsFn())
            | "TopKPerShard"
            >> beam.Map(lambda kv: combiners.top_tokens(kv[1], cfg.vocab_size, cfg.min_count))
            | "TopKGlobal" >> beam.CombineGlobally(combiners.TopTokensFn(cfg.vocab_size))
        )


class ComputeStatistics(beam.PTransform):
    """Documents per split, label counts and token-length histogram."""

    def expand(self, cleaned):
        return (
            cleaned
            | "BatchStatistics" >> beam.Map(batches.batch_statistics)
            | "MergeStatistics" >> beam.CombineGlobally(combiners.StatisticsFn())
        )


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters as JSONL and counts them by reason."""

    def __init__(self, data_dir: str):
        super().__init__()
        self._data_dir = data_dir

    def expand(self, dead_letters):
        _ = (
            dead_letters
            | "ToJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
            | "WriteJsonl"
            >> beam.io.WriteToText(
                os.path.join(self._data_dir, schema.DEAD_LETTER_DIR, "part"),
                file_name_suffix=".jsonl",
                num_shards=1,
            )
        )
        return (
            dead_letters
            | "ReasonOf" >> beam.Map(lambda d: d["reason"])
            | "CountReasons" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.combiners.ToDict()
        )
