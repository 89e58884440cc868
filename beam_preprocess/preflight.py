"""Checks of the input files before any work: formats and configured fields.

A wrong field name or an unknown file type used to surface as a job that
dead-letters every record (and exits 0), or as a crash after the previous
dataset was deleted. Here, before the job starts and before anything is
written, every input file's format must be known, and the first records of
each file are read to see which fields it has:

- CSV and Parquet have a header or a schema: every configured field must be
  a column of every file;
- JSONL and TFRecord have no schema: the id and label fields must appear
  among the first `SAMPLE_RECORDS` records of each file, and each text
  field and the split field among the sampled records of some file (they
  may be optional per record).

A problem is a `ConfigError` whose one-line message names the config key,
the file and the fields the file does have. At most `MAX_FILES` files are
opened (an even sample of larger inputs); at most `SAMPLE_BYTES` of each
are read. A file that cannot be read here is left to the job, which turns
it into an ``unreadable_file`` dead letter.
"""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ThreadPoolExecutor

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from doctags_core import readers, records
from doctags_core.beam_io import input_format
from doctags_core.config import Config, ConfigError

log = logging.getLogger(__name__)

SAMPLE_RECORDS = 100
SAMPLE_BYTES = 1 << 20
MAX_FILES = 1000
_SCHEMA_FORMATS = ("csv", "parquet")


def matched_files(cfg: Config) -> list[tuple[str, str]]:
    """``(path, format)`` of every input file, sorted.

    Raises:
        ConfigError: a glob that matches nothing, or a file whose format
            cannot be told from its extension (with ``data.format: auto``).
    """
    files = []
    for pattern in cfg.data.input_pattern:
        matches = FileSystems.match([pattern])[0].metadata_list
        if not matches:
            raise ConfigError(f"data.input_pattern: no file matches {pattern!r}")
        for m in matches:
            try:
                files.append((m.path, input_format(m.path, cfg.data.format)))
            except ValueError as e:
                raise ConfigError(str(e)) from None  # "data.format: cannot tell ..."
    return sorted(set(files))


def _head(path: str) -> bytes:
    """Up to `SAMPLE_BYTES` of the file, decompressed."""
    stream = readers.open_text_input(path)
    try:
        return stream.read(SAMPLE_BYTES)
    finally:
        stream.close()


def _csv_columns(path: str) -> list[str]:
    text = _head(path).decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(text)), [])


def _parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return list(pq.ParquetFile(f).schema_arrow.names)


def _jsonl_keys(path: str) -> dict[str, int]:
    keys: dict[str, int] = {}
    for line in _head(path).split(b"\n")[:SAMPLE_RECORDS]:  # a cut last line does not parse
        try:
            row = records.row_of(line)
        except records.BadRecord:
            continue
        for k in row:
            keys[k] = keys.get(k, 0) + 1
    return keys


def _tfrecord_keys(path: str, cfg: Config) -> dict[str, int]:
    from doctags_core.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    keys: dict[str, int] = {}
    dataset = tf.data.TFRecordDataset(path, compression_type=readers.tfrecord_compression(path))
    for raw in dataset.take(SAMPLE_RECORDS).as_numpy_iterator():
        try:
            row = records.row_from_example(raw, cfg.data)
        except records.BadRecord:
            continue
        for k in row:
            keys[k] = keys.get(k, 0) + 1
    return keys


def fields_of(path: str, fmt: str, cfg: Config) -> dict[str, int] | None:
    """Field names of a file's first records (a header counts as every record).

    Returns:
        ``{field: records holding it}``, or None when the file cannot be
        read here (the job will dead-letter it).
    """
    try:
        if fmt == "csv":
            return {c: 1 for c in _csv_columns(path)}
        if fmt == "parquet":
            return {c: 1 for c in _parquet_columns(path)}
        if fmt == "tfrecord":
            return _tfrecord_keys(path, cfg)
        return _jsonl_keys(path)
    except Exception as e:  # noqa: BLE001 - unreadable: the job's dead letter, not ours
        log.debug("preflight: cannot read %s: %s", path, e)
        return None


def _required(cfg: Config) -> list[tuple[str, str, bool]]:
    """``(config key, field, needed in every file)`` for each configured field."""
    d = cfg.data
    out = [("data.text_fields", name, False) for name in d.text_fields]
    out.append(("data.label_field", d.label_field, True))
    if d.id_field:
        out.append(("data.id_field", d.id_field, True))
    if d.split_field:
        out.append(("data.split_field", d.split_field, False))
    return out


def _message(key: str, name: str, path: str, fmt: str, fields: dict) -> str:
    shown = ", ".join(repr(f) for f in list(fields)[:20]) or "none"
    if fmt in _SCHEMA_FORMATS:
        where = f"is not a column of {path} (its columns: {shown})"
    else:
        where = f"is in none of the first records of {path} (their fields: {shown})"
    hint = ""
    if key == "data.id_field":
        hint = "; set data.id_field: null to use a hash of the text as the id"
    return f"{key}: {name!r} {where}{hint}"


def _sample(files: list) -> list:
    if len(files) <= MAX_FILES:
        return files
    step = len(files) / MAX_FILES
    return [files[int(i * step)] for i in range(MAX_FILES)]


def check_inputs(cfg: Config) -> list[tuple[str, str]]:
    """Checks every input file's format and fields before any work.

    Returns:
        ``(path, format)`` of every input file.

    Raises:
        ConfigError: naming the key, the file and the fields it has.
    """
    files = matched_files(cfg)
    sample = _sample(files)
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda f: fields_of(f[0], f[1], cfg), sample))
    optional_seen: dict[str, bool] = {}
    first_without: dict[str, tuple] = {}
    for (path, fmt), fields in zip(sample, found):
        if fields is None or not fields:
            continue
        for key, name, everywhere in _required(cfg):
            present = name in fields
            if (everywhere or fmt in _SCHEMA_FORMATS) and not present:
                raise ConfigError(_message(key, name, path, fmt, fields))
            optional_seen[name] = optional_seen.get(name, False) or present
            if not present:
                first_without.setdefault(name, (key, path, fmt, fields))
    for name, seen in optional_seen.items():
        if not seen:
            key, path, fmt, fields = first_without[name]
            raise ConfigError(_message(key, name, path, fmt, fields))
    log.debug("preflight: %d input file(s), %d checked", len(files), len(sample))
    return files


def describe(files: list[tuple[str, str]]) -> str:
    """``3 files (jsonl 2, csv 1)``."""
    counts: dict[str, int] = {}
    for _, fmt in files:
        counts[fmt] = counts.get(fmt, 0) + 1
    return f"{len(files)} file(s) ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
