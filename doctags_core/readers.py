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
from itertools import repeat
from typing import Any

from doctags_core import records
from doctags_core.config import DataConfig

# Bytes read at a time from JSONL files. A gzip stream cut short raises on the
# read that reaches the cut, losing what that read had decompressed: 1 MiB
# bounds that loss and costs nothing measurable against 4 MiB reads.
_CHUNK = 1 << 20


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


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged file raises: truncated or fake gzip, bad deflate, I/O.

    ``EOFError`` is a gzip stream cut short, ``OSError`` (``BadGzipFile``)
    a fake gzip or a failed CRC, ``zlib.error`` (and ISA-L's) corrupt
    deflate data.
    """
    import zlib

    errors: tuple = (OSError, EOFError, zlib.error)
    try:
        from isal import isal_zlib

        errors += (isal_zlib.error,)
    except ImportError:  # pragma: no cover - isal is a dependency
        pass
    return errors


def unreadable(source: str, error: BaseException, records_before: int) -> dict:
    """The ``unreadable_file`` dead letter for a file that failed part-way.

    The records read before the damage were passed on (they are kept); the
    detail says how many, so the loss is the rest of this one file.
    """
    detail = f"{type(error).__name__}: {error} (after {records_before} record(s) of this file)"
    return records.dead_letter(source, records.UNREADABLE_FILE, detail, "")


def _too_large(source: str, size: int, limit: int, head: bytes) -> dict:
    detail = f"a line of {size} bytes or more, over preprocess.max_record_bytes={limit}"
    return records.dead_letter(source, records.RECORD_TOO_LARGE, detail, head)


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class _LongLine:
    """The unfinished last line of a JSONL stream, as pieces (no quadratic joins).

    Once it grows past ``limit`` bytes its pieces are dropped (only the first
    bytes are kept, for the dead letter) and the rest of the line is skipped
    as it streams past: one huge line never sits in memory whole.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.pieces: list[bytes] = []
        self.size = 0
        self.head = b""
        self.skipping = False

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.skipping:
            return
        self.pieces.append(piece)
        if self.size > self.limit:
            self.head = b"".join(self.pieces)[:2000]
            self.pieces, self.skipping = [], True

    def finish(self, last: bytes) -> tuple[bytes | None, int, bytes]:
        """``(line or None when too long, its size, its first bytes)``; resets."""
        self.add(last)
        line = None if self.skipping else b"".join(self.pieces)
        done = (line, self.size, self.head)
        self.pieces, self.skipping, self.size, self.head = [], False, 0, b""
        return done


def iter_jsonl_batches(
    stream, source: str, batch_size: int, max_record_bytes: int | None = None
) -> Iterator:
    r"""Batches of ``(source, line_bytes)``; lines are not decoded here.

    Like Beam's text reader: ``\n`` or ``\r\n`` ends a line, the last line
    needs no newline, and a blank line is a (bad) record of its own. A
    UTF-8 byte order mark is the parser's business (`records.row_of`).

    A line longer than ``max_record_bytes`` becomes a ``record_too_large``
    dead letter without ever being held whole. A read error (a truncated or
    corrupt gzip stream) ends the file with one ``unreadable_file`` dead
    letter, after the complete lines read before it (they are kept).
    """
    batch: list = []
    for kind, item in _jsonl_lines(stream, source, max_record_bytes or (1 << 62)):
        if kind == "lines":
            batch += zip(repeat(source), item)
            while len(batch) >= batch_size:
                yield batch[:batch_size]
                batch = batch[batch_size:]
            continue
        if kind == "line":
            batch.append((source, item))
            if len(batch) >= batch_size:
                yield batch
                batch = []
            continue
        if kind == "unreadable" and batch:  # the lines before the damage first
            yield batch
            batch = []
        yield item
    if batch:
        yield batch


def _jsonl_lines(stream, source: str, limit: int) -> Iterator[tuple[str, Any]]:
    """Lines and dead letters of a JSONL stream, tagged by kind.

    Yields ``("line", bytes)``, ``("lines", [bytes])`` (a chunk's lines),
    ``("dead", dead letter)``, or a last ``("unreadable", dead letter)``.

    Reads the stream in chunks so that a line longer than ``limit`` is never
    held whole (see `_LongLine`).
    """
    errors = read_errors()
    pending = _LongLine(limit)
    lines_done = 0
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except errors as e:
            yield "unreadable", unreadable(source, e, lines_done)
            return
        if not chunk:
            break
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.add(chunk)
            continue
        parts[0], size, head = pending.finish(parts[0])
        if parts[0] is None:
            yield "dead", _too_large(source, size, limit, head)
            lines_done += 1
        pending.add(parts[-1])
        whole = parts[:-1] if parts[0] is not None else parts[1:-1]
        # The first line may end with a CR left at the end of the last chunk.
        no_cr = b"\r" not in chunk and not (whole and whole[0].endswith(b"\r"))
        if no_cr and max(map(len, whole), default=0) <= limit:
            # The common chunk: no line to strip or to refuse, all passed on
            # in one list instead of one generator step per line.
            lines_done += len(whole)
            yield "lines", whole
            continue
        for line in whole:
            lines_done += 1
            yield _checked_line(source, line, limit)
    tail, size, head = pending.finish(b"")
    if tail is None:
        yield "dead", _too_large(source, size, limit, head)
    elif tail:
        yield "line", _strip_cr(tail)


def _checked_line(source: str, line: bytes, limit: int) -> tuple[str, Any]:
    """``("line", the line without a trailing CR)``, or a ``record_too_large`` dead letter."""
    if len(line) > limit:
        return "dead", _too_large(source, len(line), limit, line[:2000])
    return "line", _strip_cr(line)


def iter_csv_batches(
    stream, source: str, batch_size: int, max_record_bytes: int | None = None
) -> Iterator:
    """Batches of ``(source, row_dict)``, and dead letters for unsplittable rows.

    A read error ends the file with an ``unreadable_file`` dead letter; the
    rows read before it are kept (the last batch is still emitted).
    """
    batch: list = []
    for row, dead in records.iter_csv_rows(stream, source, max_record_bytes):
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
