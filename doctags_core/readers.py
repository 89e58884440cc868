"""Per-format readers that turn one input file into batches of raw records.

Each reader streams its file (a bounded buffer, never the whole file) and
yields either a batch, a list of ``(source, raw)`` records, or a dead-letter
dict for what cannot even be split into records. A raw record is the bytes of
a JSONL line or a row dict (CSV, Parquet, TFRecord of ``tf.train.Example``);
`records.parse_record` turns either into a document or a dead letter.

Reading whole files in one DoFn call and batching here means the Beam job
pays per-element overhead once per batch from the very first step.
"""

from __future__ import annotations

from collections.abc import Iterator

from doctags_core import records
from doctags_core.config import DataConfig

_CHUNK = 4 << 20  # bytes read at a time from JSONL files


def open_text_input(path: str):
    """A binary stream of a JSONL or CSV file, decompressed.

    ``.gz`` files are decompressed with ISA-L (several times faster than
    zlib, concatenated gzip members included); other compressions go
    through Beam's own detection. Works on any filesystem Beam knows.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if path.lower().endswith(".gz"):
        try:
            from isal import igzip

            raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
            return igzip.IGzipFile(fileobj=raw, mode="rb")
        except ImportError:  # pragma: no cover - isal is a dependency
            pass
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def iter_jsonl_batches(stream, source: str, batch_size: int) -> Iterator[list]:
    r"""Batches of ``(source, line_bytes)``; lines are not decoded here.

    Like Beam's text reader: ``\n`` or ``\r\n`` ends a line, the last line
    needs no newline, and a blank line is a (bad) record of its own.
    """
    batch: list = []
    tail = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            batch.append((source, line[:-1] if line.endswith(b"\r") else line))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if tail:
        batch.append((source, tail[:-1] if tail.endswith(b"\r") else tail))
    if batch:
        yield batch


def iter_csv_batches(stream, source: str, batch_size: int) -> Iterator:
    """Batches of ``(source, row_dict)``, and dead letters for unsplittable rows."""
    batch: list = []
    for row, dead in records.iter_csv_rows(stream, source):
        if dead is not None:
            yield dead
            continue
        batch.append((source, row))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _columns(cfg: DataConfig) -> list[str]:
    names = [*cfg.text_fields, cfg.label_field, cfg.id_field, cfg.split_field]
    return list(dict.fromkeys(n for n in names if n))


def iter_parquet_batches(stream, source: str, batch_size: int, cfg: DataConfig | None) -> Iterator:
    """Batches of ``(source, row_dict)`` read one Parquet record batch at a time.

    Only the configured columns are read (columns missing from the file are
    simply absent from the rows, so the parser dead-letters the rows with
    the reason for the missing field); every column when ``cfg`` is None
    (`doctags init` looking at unknown data). A file pyarrow cannot open
    becomes one ``unreadable_file`` dead letter.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
        present = parquet.schema_arrow.names
        wanted = present if cfg is None else _columns(cfg)
        columns = [c for c in wanted if c in set(present)]
        batches = parquet.iter_batches(batch_size=batch_size, columns=columns)
        for record_batch in batches:
            yield [(source, row) for row in record_batch.to_pylist()]
    except (pa.ArrowException, OSError) as e:
        yield records.dead_letter(source, records.UNREADABLE_FILE, str(e), "")


def tfrecord_compression(path: str) -> str:
    """TFRecordDataset compression type from the file extension."""
    name = path.lower()
    if name.endswith(".gz") or name.endswith(".gzip"):
        return "GZIP"
    if name.endswith(".zlib") or name.endswith(".deflate"):
        return "ZLIB"
    return ""


def iter_tfrecord_batches(path: str, batch_size: int, cfg: DataConfig) -> Iterator:
    """Batches of ``(source, row_dict)`` from a TFRecord file of tf.train.Example.

    Read with ``tf.data`` (C++ framing, checksums and decompression; local
    or any filesystem TensorFlow knows, e.g. ``gs://``). An entry that is
    not an Example is an ``invalid_example`` dead letter; a corrupt or
    truncated file ends with one ``unreadable_file`` dead letter after the
    records read before the damage.
    """
    from doctags_core.tf_runtime import import_tensorflow

    tf = import_tensorflow()

    def records_from(skip: int, batched: bool):
        dataset = tf.data.TFRecordDataset(path, compression_type=tfrecord_compression(path))
        dataset = dataset.skip(skip)
        return iter((dataset.batch(batch_size) if batched else dataset).as_numpy_iterator())

    def rows(serialized) -> Iterator:
        batch: list = []
        for raw in serialized:
            try:
                batch.append((path, records.row_from_example(raw, cfg)))
            except records.BadRecord as e:
                yield records.dead_letter(path, e.reason, e.detail, raw)
        if batch:
            yield batch

    done = 0
    iterator = records_from(0, batched=True)
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError:
            break  # salvage the failing batch record by record, below
        yield from rows(serialized)
        done += len(serialized)
    single = records_from(done, batched=False)
    salvaged = []
    while True:
        try:
            salvaged.append(next(single))
        except tf.errors.OpError as e:
            yield from rows(salvaged)
            yield records.dead_letter(path, records.UNREADABLE_FILE, e.message, "")
            return
        except StopIteration:  # pragma: no cover - the batched read failed, so must this
            yield from rows(salvaged)
            return
