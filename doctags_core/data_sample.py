"""A sample of an input's records as plain dicts: what `doctags init` looks at.

The records are split by the same readers as the Beam job
(`doctags_core.readers`: JSONL lines, CSV with quoted newlines and a byte
order mark, Parquet one record batch at a time), so what `init` sees is
what preprocessing will see; gzip is read with ISA-L as there. Only the
beginning of the first file is scanned (``scan`` records), and a uniform
sample of it is kept: files sorted by split or by label would fool a sample
of the first rows only.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from doctags_core import readers, records

SCAN = 50_000  # records read at most
SIZE = 2_000  # records kept for the field statistics
_PARQUET_MAGIC = b"PAR1"
# `doctags_core.beam_io.input_format`'s extensions (that module imports Beam).
_EXTENSIONS = (
    ((".jsonl", ".ndjson", ".json"), "jsonl"),
    ((".csv",), "csv"),
    ((".parquet", ".pq"), "parquet"),
    ((".tfrecord", ".tfrecords", ".tfrec"), "tfrecord"),
)


@dataclass(frozen=True)
class Sample:
    """Records read from an input, with how they were read.

    Attributes:
        path: The file read (the first that the pattern matches).
        files: How many files the pattern matches.
        format: ``jsonl``, ``csv`` or ``parquet``.
        rows: The sampled records, in file order.
        scanned: Records read (all of the file when ``complete``).
        complete: The whole file was read.
        unreadable: Records the readers could not split (bad JSON lines,
            CSV rows with the wrong number of fields).
    """

    path: str
    files: int
    format: str
    rows: list[dict]
    scanned: int
    complete: bool
    unreadable: int


class SampleError(ValueError):
    """An input that cannot be sampled; the message says what to do."""


def open_local(path: str):
    """A binary stream of a local file, gunzipped (ISA-L) when it ends in ``.gz``.

    `readers.open_text_input` does the same through Beam's file systems;
    importing Beam costs seconds and fills a terminal with its import-time
    warnings, and `doctags init` only reads local files.
    """
    if path.lower().endswith((".gz", ".gzip")):
        from isal import igzip

        return igzip.open(path, "rb")
    return open(path, "rb")


def _sniff_format(path: str) -> str:
    """The format from the first bytes, for files whose extension says nothing."""
    with open(path, "rb") as raw:
        if raw.read(4) == _PARQUET_MAGIC:
            return "parquet"
    with open_local(path) as stream:
        head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if head.startswith(b"{") else "csv"


def _format_by_extension(path: str) -> str | None:
    name = re.sub(r"\.(gz|gzip)$", "", path.lower())
    for suffixes, fmt in _EXTENSIONS:
        if name.endswith(suffixes):
            return fmt
    return None


def detect_format(path: str) -> str:
    """``jsonl``, ``csv`` or ``parquet``: by extension (as ``data.format: auto``), else content.

    Raises:
        SampleError: for TFRecord input (its field names are not in the data's
            first bytes; write the config by hand).
    """
    fmt = _format_by_extension(path) or _sniff_format(path)
    if fmt == "tfrecord":
        raise SampleError(
            f"{path}: doctags init reads JSONL, CSV and Parquet; for TFRecord input "
            "start from configs/reuters.yaml and `doctags config --explain data`"
        )
    return fmt


def _jsonl_rows(stream, path: str) -> Iterator[dict | None]:
    for batch in readers.iter_jsonl_batches(stream, path, 1024):
        for _, line in batch:
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield None
                continue
            yield obj if isinstance(obj, dict) else None


def _csv_rows(stream, path: str) -> Iterator[dict | None]:
    for row, _dead in records.iter_csv_rows(stream, path):
        yield row


def _parquet_rows(stream, path: str) -> Iterator[dict | None]:
    for batch in readers.iter_parquet_batches(stream, path, 1024, None):
        if isinstance(batch, dict):  # the file cannot be read at all
            raise SampleError(f"{path}: not a readable Parquet file: {batch['detail']}")
        for _, row in batch:
            yield row


def iter_rows(path: str, fmt: str) -> Iterator[dict | None]:
    """Every record of one file as a dict (None for one the reader cannot split)."""
    if fmt == "parquet":
        stream = open(path, "rb")
        rows = _parquet_rows(stream, path)
    else:
        stream = open_local(path)
        rows = _jsonl_rows(stream, path) if fmt == "jsonl" else _csv_rows(stream, path)
    try:
        yield from rows
    finally:
        stream.close()


def read_sample(pattern: str, size: int = SIZE, scan: int = SCAN, seed: int = 0) -> Sample:
    """A uniform sample of ``size`` records among the first ``scan`` of the input.

    Args:
        pattern: A file or a glob; the first matching file (sorted) is read.
        size: Records kept.
        scan: Records read at most.
        seed: Sampling seed (the same input gives the same sample).

    Raises:
        SampleError: when nothing matches, or no record can be read.
    """
    files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        raise SampleError(f"--input: no file matches {pattern!r}")
    path = files[0]
    fmt = detect_format(path)
    rng = random.Random(seed)
    kept: list[tuple[int, dict]] = []
    scanned = unreadable = 0
    complete = True
    for row in iter_rows(path, fmt):
        if scanned >= scan:
            complete = False
            break
        scanned += 1
        if row is None:
            unreadable += 1
            continue
        readable = scanned - unreadable
        if len(kept) < size:
            kept.append((scanned, row))
        else:  # reservoir sampling: every readable record has the same chance
            slot = rng.randrange(readable)
            if slot < size:
                kept[slot] = (scanned, row)
    if not kept:
        raise SampleError(f"{path}: no readable {fmt} record in the first {scanned}")
    rows = [row for _, row in sorted(kept, key=lambda item: item[0])]
    return Sample(path, len(files), fmt, rows, scanned, complete, unreadable)
