"""Pure functions that turn raw input records into documents or dead letters.

No Beam here: these run inside the pipeline's DoFns and are tested directly.
A raw record is either the bytes of one JSONL line or one CSV row already
split into a dict. Every record ends up as exactly one `Document` or exactly
one dead letter with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from doctags_core.config import DataConfig
from doctags_core.labels import LabelError, parse_labels
from doctags_core.splits import normalize_split

# Dead-letter reasons, also used as counter names.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
INVALID_CSV = "invalid_csv"
MISSING_TEXT = "missing_text"
MISSING_LABELS = "missing_labels"
INVALID_LABELS = "invalid_labels"
MISSING_ID = "missing_id"
INVALID_SPLIT = "invalid_split"
INVALID_EXAMPLE = "invalid_example"  # a TFRecord entry that is not a tf.train.Example
UNREADABLE_FILE = "unreadable_file"  # a file (or its rest) that cannot be read, any format
DUPLICATE = "duplicate"  # same normalized text as a kept document (preprocess.dedupe)
DUPLICATE_ID = "duplicate_id"  # another record has the same id (preprocess.duplicate_ids)
TOO_LONG = "too_long"  # text over preprocess.max_chars with preprocess.oversize: dead_letter
RECORD_TOO_LARGE = "record_too_large"  # a raw line over preprocess.max_record_bytes
EMPTY_AFTER_CLEANING = "empty_after_cleaning"  # no token left once cleaned

_MAX_RECORD_CHARS = 20000  # keep dead-letter files readable on huge bad rows
# Lone surrogates: undecodable bytes kept by ``surrogateescape`` (CSV,
# TFRecord) or JSON escapes such as "\ud800". A regex search runs in C; a
# generator over every character cost ~300 us per document.
_SURROGATE = re.compile("[\ud800-\udfff]")


class Document(NamedTuple):
    """One valid input document, before cleaning.

    A named tuple rather than a frozen dataclass: as immutable, and made
    in ~0.7 us instead of ~1.5, once per document of the corpus.

    Attributes:
        doc_id: The document id (``data.id_field``, or a hash of the text).
        text: The joined text fields, at most ``preprocess.max_chars``.
        labels: Distinct label names.
        given_split: The split named in the data, canonical, or None.
        truncated: The text was cut to ``preprocess.max_chars``.
    """

    doc_id: str
    text: str
    labels: tuple[str, ...]
    given_split: str | None
    truncated: bool = False


@dataclass(frozen=True)
class TextLimit:
    """How long a document's text may be, and what happens beyond.

    Attributes:
        max_chars: Characters kept (``preprocess.max_chars``); None: no limit.
        oversize: ``truncate`` or ``dead_letter`` (``preprocess.oversize``).
    """

    max_chars: int | None = None
    oversize: str = "truncate"


class BadRecord(Exception):
    """Raised by the parsers; carries the dead-letter reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def dead_letter(source: str, reason: str, detail: str, raw) -> dict:
    """The JSON-serializable dead-letter entry for one bad record."""
    if isinstance(raw, bytes):
        # Cut before decoding: a huge bad line is not copied whole again.
        record = raw[: 4 * _MAX_RECORD_CHARS].decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, dict):
        record = json.dumps(raw, ensure_ascii=True, default=str)
    else:
        record = str(raw)
    return {
        "source": source,
        "reason": reason,
        "detail": detail,
        "record": record[:_MAX_RECORD_CHARS],
    }


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord(INVALID_UTF8, f"byte {e.start}: {e.reason}") from e


def _parse_json_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRecord(INVALID_JSON, str(e)) from e
    if not isinstance(obj, dict):
        raise BadRecord(INVALID_JSON, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _limited(text: str, limit: TextLimit | None) -> tuple[str, bool]:
    """``(text, truncated)`` under ``limit``; BadRecord when it must be dead-lettered."""
    if limit is None or limit.max_chars is None or len(text) <= limit.max_chars:
        return text, False
    if limit.oversize == "dead_letter":
        raise BadRecord(
            TOO_LONG, f"{len(text)} characters, over preprocess.max_chars={limit.max_chars}"
        )
    return text[: limit.max_chars], True


def _text_of(row: dict, cfg: DataConfig) -> str:
    parts = []
    for name in cfg.text_fields:
        value = row.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadRecord(MISSING_TEXT, f"field {name!r} is {type(value).__name__}, not text")
        # isascii() first: ASCII text holds no surrogate, and the search cost ~3 us a field.
        if not value.isascii() and _SURROGATE.search(value):
            raise BadRecord(INVALID_UTF8, f"field {name!r} holds undecodable bytes")
        if value.strip():
            parts.append(value)
    if not parts:
        raise BadRecord(MISSING_TEXT, f"no text in field(s) {', '.join(cfg.text_fields)}")
    return "\n".join(parts)


def _id_of(row: dict, cfg: DataConfig, text: str) -> str:
    """The document id: the ``id_field`` value, or a hash of the text without one."""
    if cfg.id_field is None:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()
    raw_id = row.get(cfg.id_field)
    if raw_id is None or str(raw_id).strip() == "":
        raise BadRecord(MISSING_ID, f"no field {cfg.id_field!r}")
    return str(raw_id).strip()


def document_from_row(row: dict, cfg: DataConfig, limit: TextLimit | None = None) -> Document:
    """Validates one record's fields and builds a `Document`.

    Args:
        row: The record's fields.
        cfg: Which fields mean what.
        limit: The longest text kept (`TextLimit`); None: no limit.

    Raises:
        BadRecord: with the reason the record cannot be used.
    """
    text, truncated = _limited(_text_of(row, cfg), limit)
    if cfg.label_field not in row or row[cfg.label_field] is None:
        raise BadRecord(MISSING_LABELS, f"no field {cfg.label_field!r}")
    try:
        labels = parse_labels(row[cfg.label_field], cfg.label_delimiter, cfg.numeric_labels)
    except LabelError as e:
        raise BadRecord(INVALID_LABELS, str(e)) from e
    if not labels and not cfg.allow_unlabeled:
        raise BadRecord(MISSING_LABELS, f"field {cfg.label_field!r} holds no label")
    doc_id = _id_of(row, cfg, text)
    given_split = None
    if cfg.split_field is not None and row.get(cfg.split_field) not in (None, ""):
        given_split = normalize_split(row[cfg.split_field])
        if given_split is None:
            raise BadRecord(INVALID_SPLIT, f"unknown split {row[cfg.split_field]!r}")
    return Document(doc_id, text, tuple(labels), given_split, truncated)


def record_id(row: dict, cfg: DataConfig) -> str | None:
    """The id `document_from_row` would give ``row``, without validating the rest.

    The first pass that finds repeated ids (`preprocess.duplicate_ids`)
    needs only this; None when the row has no usable id (the main pass
    dead-letters it).
    """
    raw_id = row.get(cfg.id_field)
    if raw_id is None:
        return None
    doc_id = str(raw_id).strip()
    return doc_id or None


def normalized_text_hash(text: str) -> int:
    """A 64-bit hash of the text with case and whitespace folded.

    Two documents with the same hash are exact duplicates up to case and
    spacing (``preprocess.dedupe``). Stable across processes and workers,
    unlike Python's ``hash``.
    """
    folded = " ".join(text.casefold().split())
    digest = hashlib.blake2b(folded.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def id_hash(doc_id: str) -> int:
    """A 64-bit hash of a document id, stable across processes (repeated ids)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def row_from_example(serialized: bytes, cfg: DataConfig) -> dict:
    """The fields of one serialized ``tf.train.Example`` of text, as a row dict.

    Bytes features become ``str`` (undecodable bytes kept as surrogates, so
    the record is dead-lettered as ``invalid_utf8`` by the parser). A field
    with one value becomes that value (so a delimited label string is split
    as in JSONL and CSV); the label field with several values is a list;
    several values of a text field are joined with newlines.

    Raises:
        BadRecord: ``invalid_example`` when the bytes are not an Example.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        example = example_pb2.Example.FromString(serialized)
    except DecodeError as e:
        raise BadRecord(INVALID_EXAMPLE, str(e)) from e
    row: dict = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            values = [v.decode("utf-8", "surrogateescape") for v in feature.bytes_list.value]
        elif kind == "int64_list":
            values = list(feature.int64_list.value)
        elif kind == "float_list":
            values = list(feature.float_list.value)
        else:
            values = []
        if len(values) == 1:
            row[name] = values[0]
        elif name == cfg.label_field:
            row[name] = values
        elif values and all(isinstance(v, str) for v in values):
            row[name] = "\n".join(values)
        elif values:
            row[name] = values
    return row


class _BoundedLines:
    """Lines of a text stream, each at most ``limit`` characters.

    A longer line is skipped as it streams past (read ``limit`` characters
    at a time, never held whole) and counted in ``skipped``; the csv
    module, which reads one line at a time, never sees it.
    """

    def __init__(self, stream, limit: int):
        self._stream = stream
        self._limit = limit
        self.skipped: list[int] = []  # sizes (in characters, at least) of skipped lines

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while True:
            line = self._stream.readline(self._limit + 1)
            if not line:
                raise StopIteration
            if len(line) <= self._limit or line.endswith("\n"):
                return line
            size = len(line)
            while line and not line.endswith("\n"):
                line = self._stream.readline(self._limit)
                size += len(line)
            self.skipped.append(size)


def iter_csv_rows(binary_stream, source: str, max_record_bytes: int | None = None):
    """Yields ``(row_dict, None)`` or ``(None, dead_letter)`` for each CSV row.

    Undecodable bytes are kept as surrogates so that the row can still be
    split and then dead-lettered with reason ``invalid_utf8`` by the parser.
    A row whose field count differs from the header's is ``invalid_csv``. A
    UTF-8 byte order mark before the header is dropped (Excel writes one;
    it would otherwise become part of the first column's name). A line or a
    quoted field longer than ``max_record_bytes`` characters is
    ``record_too_large`` (reading resumes at the next line), and a read
    error (a truncated gzip) ends the file with ``unreadable_file`` after
    the rows read before it.
    """
    import csv
    import io

    from doctags_core.readers import read_errors, unreadable

    limit = max_record_bytes or (1 << 62)
    csv.field_size_limit(min(limit, 2**31 - 1))  # the module's default is 131,072 characters
    stream = io.TextIOWrapper(
        binary_stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    lines = _BoundedLines(stream, limit)
    reader = csv.reader(lines)
    errors = read_errors()
    rows = 0
    try:
        header = next(reader)
    except StopIteration:
        return
    except errors as e:
        yield None, unreadable(source, e, 0)
        return

    def too_long_lines():
        while lines.skipped:
            size = lines.skipped.pop(0)
            detail = f"a line of {size} characters, over preprocess.max_record_bytes={limit}"
            yield None, dead_letter(source, RECORD_TOO_LARGE, detail, "")

    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            yield from too_long_lines()
            return
        except errors as e:
            yield from too_long_lines()
            yield None, unreadable(source, e, rows)
            return
        except csv.Error as e:
            yield from too_long_lines()
            if "field larger than field limit" in str(e):
                detail = f"row after line {line}: a field over preprocess.max_record_bytes={limit}"
                yield None, dead_letter(source, RECORD_TOO_LARGE, detail, "")
                continue  # the csv module resumes at the next line
            yield None, dead_letter(source, INVALID_CSV, f"row after line {line}: {e}", "")
            return  # the csv module cannot resynchronise after a hard error
        yield from too_long_lines()
        line = reader.line_num
        if not fields:
            continue  # a blank line is not a record in CSV
        rows += 1
        if len(fields) != len(header):
            detail = f"line {line}: {len(fields)} fields, header has {len(header)}"
            yield (
                None,
                dead_letter(
                    source, INVALID_CSV, detail, ",".join(fields).encode("utf-8", "surrogateescape")
                ),
            )
            continue
        yield dict(zip(header, fields)), None


def _has_float(row: dict) -> bool:
    """Whether a top-level value, or an item of a top-level list, is a float.

    Plain loops: for a row of a few fields they beat building type sets
    (0.4 us against 2.1) and a generator per list (1.1).
    """
    for value in row.values():
        kind = type(value)
        if kind is float:
            return True
        if kind is list:
            for item in value:
                if type(item) is float:
                    return True
    return False


def _fast_row(line: bytes) -> dict | None:
    """``line`` parsed by orjson when that gives exactly what `json` gives, else None.

    orjson parses a synthetic 1.2 kB line in ~2 us where ``json.loads``
    takes ~7 (twice per record when repeated ids are looked for). It
    differs from ``json`` on what it refuses (invalid UTF-8, lone
    surrogate escapes, NaN, a byte order mark, a non-object) and on
    integers beyond 64 bits, which it turns into floats. A refused line,
    or one holding a float where ids and labels live (top-level values
    and list items), goes the `json` way, so every record gets the same
    fields or the same dead letter, with the same detail, as before.
    """
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(row) is not dict or _has_float(row):
        return None
    return row


def row_of(raw) -> dict:
    """The fields of a raw record: a JSONL line (bytes or str) or a row dict.

    Raises:
        BadRecord: ``invalid_utf8`` or ``invalid_json``.
    """
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        row = _fast_row(raw)
        if row is not None:
            return row
    text = _decode_line(raw) if isinstance(raw, bytes) else raw
    if text.startswith("\ufeff"):  # a byte order mark (first line of a file, or concatenated)
        text = text[1:]
    return _parse_json_object(text)


def parse_unlabeled(raw, cfg: DataConfig) -> tuple[str, str]:
    """``(id, text)`` of a record to be tagged: labels and split, if any, are ignored.

    The text and id rules are the training data's (`document_from_row`), so
    a corpus is read the same way for training and for batch tagging.

    Raises:
        BadRecord: with the reason the record cannot be tagged.
    """
    raw = row_of(raw)
    text = _text_of(raw, cfg)
    return _id_of(raw, cfg, text), text


def parse_record(raw, cfg: DataConfig, limit: TextLimit | None = None) -> Document:
    """Parses a JSONL line (bytes or str) or a CSV row (dict) into a Document.

    Raises:
        BadRecord: with the reason the record cannot be used.
    """
    return document_from_row(row_of(raw), cfg, limit)


# Field names counted per batch for the data report: enough to show what a
# file holds when a configured field is missing, bounded however wild the keys.
_MAX_KEYS = 50


def observe_rows(rows: list[dict], cfg: DataConfig, counts: dict) -> None:
    """Adds a batch of parsed rows to the per-field counts of the data report.

    ``counts`` gets ``rows``, ``present:F`` (the field is there and not
    null) for every configured field, ``text:F`` (it holds non-blank text)
    for each text field, and ``key:K`` for the rows' field names (at most
    `_MAX_KEYS` distinct ones, the first seen). A misspelled ``text_fields``
    entry shows up as a field that is never present, instead of training
    on the others.

    Counted a field at a time over the batch, and field names once per
    distinct set of names (rows of one file mostly share one): the same
    counts as row by row, 0.8 us per synthetic row instead of 2.4.
    """
    if not rows:
        return
    counts["rows"] = counts.get("rows", 0) + len(rows)
    for name in (*cfg.text_fields, cfg.label_field, cfg.id_field, cfg.split_field):
        if name is None:
            continue
        present = sum(1 for row in rows if row.get(name) is not None)
        if present:
            counts[f"present:{name}"] = counts.get(f"present:{name}", 0) + present
    for name in cfg.text_fields:
        texts = sum(1 for row in rows if _is_text(row.get(name)))
        if texts:
            counts[f"text:{name}"] = counts.get(f"text:{name}", 0) + texts
    # Shapes in order of first appearance, names in row order: the names are
    # met in the order the rows show them, so the same ones make the cut.
    for shape, n in Counter(tuple(row) for row in rows).items():
        for name in shape:
            key = f"key:{name}"
            if key in counts:
                counts[key] += n
            elif counts.get("distinct_keys", 0) < _MAX_KEYS:
                counts[key] = n
                counts["distinct_keys"] = counts.get("distinct_keys", 0) + 1


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())
