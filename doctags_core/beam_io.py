"""Beam I/O shared by the Beam jobs: input files to record batches, dead letters, runners.

The preprocessing job (`beam_preprocess`) and batch tagging (`serving`)
read the same inputs (JSONL, CSV, Parquet, TFRecord; several globs), send
what cannot be read to the same dead-letter files, and run on the same
runners; this module holds those pieces once.

Runners: on Beam 2.68+ the runner called ``DirectRunner`` is
``SwitchingDirectRunner``, which first tries the Prism runner (it downloads
a Go binary and runs the job there) and falls back to the in-process
FnApiRunner only when that fails. A local run here always builds the
FnApiRunner itself, as the DirectRunner's fallback does, so a machine with
network runs the same runner as one without, the one that was measured.
"""

from __future__ import annotations

import json
import logging
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from doctags_core import progress, readers, records, schema
from doctags_core.config import DataConfig

log = logging.getLogger(__name__)

DEAD_LETTER_TAG = "dead_letter"
NAMESPACE = "doctags"
# Runner names that mean "run here, in this process": both get the FnApiRunner.
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "SwitchingDirectRunner")


_EXTENSIONS = (
    ((".jsonl", ".ndjson", ".json"), "jsonl"),
    ((".csv",), "csv"),
    ((".parquet", ".pq"), "parquet"),
    ((".tfrecord", ".tfrecords", ".tfrec"), "tfrecord"),
)


def input_format(pattern: str, configured: str) -> str:
    """``jsonl``, ``csv``, ``parquet`` or ``tfrecord`` for one input pattern.

    From config, else from the extension (compression suffixes ignored).
    """
    if configured != "auto":
        return configured
    name = pattern.lower()
    for suffix in (".gz", ".gzip", ".bz2", ".zst", ".deflate", ".zlib"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffixes, fmt in _EXTENSIONS:
        if name.endswith(suffixes):
            return fmt
    raise ValueError(
        f"data.format: cannot tell the format of {pattern!r} from its extension; "
        "set data.format to jsonl, csv, parquet or tfrecord"
    )


def file_format(path: str, configured: str) -> str | None:
    """`input_format` of one matched file, or None when it cannot be told."""
    try:
        return input_format(path, configured)
    except ValueError:
        return None


class ReadFileBatches(beam.DoFn):
    """Streams one file into batches of raw records (see `readers`).

    A file that cannot be opened or read to its end is one
    ``unreadable_file`` dead letter naming it (after the records read
    before the damage, which are kept), never a failed job: one bad file
    among thousands must not cost the corpus.
    """

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int,
        max_record_bytes: int | None = None,
        counted: bool = True,
    ):
        self._cfg = cfg
        self._batch_size = batch_size
        self._max_record_bytes = max_record_bytes
        self._counted = counted

    def _count_read(self, n: int = 1) -> None:
        if self._counted:
            beam.metrics.Metrics.counter(NAMESPACE, "records_read").inc(n)
            progress.add(progress.READ, n)

    def _count_dead(self, reason: str) -> None:
        if self._counted:
            beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{reason}").inc()
            progress.add(progress.DEAD)

    def _items(self, fmt: str, path: str, stream):
        n = self._batch_size
        if fmt == "tfrecord":
            return readers.iter_tfrecord_batches(path, n, self._cfg)
        if fmt == "parquet":
            return readers.iter_parquet_batches(stream, path, n, self._cfg)
        if fmt == "csv":
            return readers.iter_csv_batches(stream, path, n, self._max_record_bytes)
        return readers.iter_jsonl_batches(stream, path, n, self._max_record_bytes)

    def _open(self, fmt: str, path: str):
        if fmt == "tfrecord":
            return None  # tf.data opens the file itself
        if fmt == "parquet":
            return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        return readers.open_text_input(path)

    def process(self, fmt_path):
        fmt, path = fmt_path
        done = 0
        stream = None
        try:
            if fmt is None:
                raise ValueError("cannot tell its format from the extension; set data.format")
            stream = self._open(fmt, path)
            for item in self._items(fmt, path, stream):
                if isinstance(item, dict):  # a dead letter: a record the reader could not split
                    self._count_read()
                    self._count_dead(item["reason"])
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, item)
                else:
                    done += len(item)
                    self._count_read(len(item))
                    yield item
        except Exception as e:  # noqa: BLE001 - any failure of one file is that file's dead letter
            self._count_read()
            self._count_dead(records.UNREADABLE_FILE)
            if self._counted:
                log.warning("unreadable input file %s: %s: %s", path, type(e).__name__, e)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, readers.unreadable(path, e, done))
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - closing a damaged stream may fail again
                    pass


class ReadRawRecords(beam.PTransform):
    """Reads every input file into batches of ``(source, raw)`` records.

    Files are matched, spread over workers (a reshuffle of the file names
    only, never of the data), and each file is streamed into batches of
    ``batch_size`` records by the reader of its format (from the config, or
    each file's extension). JSONL lines are kept as bytes (not decoded) so
    that invalid UTF-8 becomes a dead letter instead of crashing the
    reader; CSV is parsed by the csv module (quoted newlines work); Parquet
    is read one record batch at a time; TFRecord entries are decoded from
    ``tf.train.Example``. What a reader cannot split into records, and
    every file it cannot read, goes to the dead-letter output.
    """

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int,
        max_record_bytes: int | None = None,
        counted: bool = True,
    ):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size
        self._max_record_bytes = max_record_bytes
        self._counted = counted  # False for a second read (metrics and progress count once)

    def expand(self, pbegin):
        files = []
        for i, pattern in enumerate(self._cfg.input_pattern):
            files.append(
                pbegin
                | f"Match{i}" >> fileio.MatchFiles(pattern)
                | f"Format{i}"
                >> beam.Map(lambda m, fmt: (file_format(m.path, fmt), m.path), self._cfg.format)
            )
        names = tuple(files) | "AllFiles" >> beam.Flatten() | "SpreadFiles" >> beam.Reshuffle()
        read = names | "ReadFileBatches" >> beam.ParDo(
            ReadFileBatches(self._cfg, self._batch_size, self._max_record_bytes, self._counted)
        ).with_outputs(DEAD_LETTER_TAG, main="records")
        return {"records": read.records, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}


class Outputs(dict):
    """Named outputs of a composite transform, also readable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


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
                # 0: each bundle writes its own file. A fixed count would group
                # every dead letter by shard first (held in memory by the
                # DirectRunner), which matters when dedupe removes many.
                num_shards=0,
            )
        )
        return (
            dead_letters
            | "ReasonOf" >> beam.Map(lambda d: d["reason"])
            | "CountReasons" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.combiners.ToDict()
        )


def pipeline_options(
    runner: str,
    running_mode: str = "in_memory",
    num_workers: int = 1,
    beam_args: list[str] | None = None,
) -> PipelineOptions:
    """Options from the config's runner settings plus passthrough flags (which win).

    Args:
        runner: The configured runner name.
        running_mode: ``direct_running_mode`` for a local run.
        num_workers: ``direct_num_workers`` for a local run.
        beam_args: Flags given after ``--`` (``--runner``, ``--project``, ...).
    """
    flags = list(beam_args or [])
    defaults = {"runner": runner}
    if runner in LOCAL_RUNNERS:
        defaults["direct_running_mode"] = running_mode
        defaults["direct_num_workers"] = num_workers
    given = {f.split("=")[0].lstrip("-") for f in flags if f.startswith("--")}
    return PipelineOptions(flags, **{k: v for k, v in defaults.items() if k not in given})


def runner_name(options: PipelineOptions) -> str:
    """The runner that will actually run: ``FnApiRunner`` for every local name."""
    name = options.view_as(StandardOptions).runner or "DirectRunner"
    return "FnApiRunner" if name in LOCAL_RUNNERS else name


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the named runner; local names get the in-process FnApiRunner.

    The FnApiRunner is built as ``SwitchingDirectRunner`` builds its fallback
    (the pipeline options in its provision info), without trying Prism first.
    """
    if runner_name(options) != "FnApiRunner":
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    direct = options.view_as(DirectOptions)
    log.info(
        "Beam runner: FnApiRunner (in this process, %s, %s worker(s))",
        direct.direct_running_mode,
        direct.direct_num_workers,
    )
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)
