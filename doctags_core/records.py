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
from dataclasses import dataclass

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
UNREADABLE_FILE = "unreadable_file"  # a Parquet or TFRecord file that cannot be read
DUPLICATE = "duplicate"  # same normalized text as a kept document (preprocess.dedupe)

_MAX_RECORD_CHARS = 20000  # keep dead-letter files readable on huge bad rows
# Lone surrogates: undecodable bytes kept by ``surrogateescape`` (CSV,
# TFRecord) or JSON escapes such as "\ud800". A regex search runs in C; a
# generator over every character cost ~300 us per document.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Document:
    """One valid input document, before cleaning."""

    doc_id: str
    text: str
    labels: tuple[str, ...]
    given_split: str | None


class BadRecord(Exception):
    """Raised by the parsers; carries the dead-letter reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def dead_letter(source: str, reason: str, detail: str, raw) -> dict:
    """The JSON-serializable dead-letter entry for one bad record."""
    if isinstance(raw, bytes):
        record = raw.decode("utf-8", errors="backslashreplace")
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


def document_from_row(row: dict, cfg: DataConfig) -> Document:
    """Validates one record's fields and builds a `Document`.

    Raises:
        BadRecord: with the reason the record cannot be used.
    """
    text = _text_of(row, cfg)
    if cfg.label_field not in row or row[cfg.label_field] is None:
        raise BadRecord(MISSING_LABELS, f"no field {cfg.label_field!r}")
    try:
        labels = parse_labels(row[cfg.label_field], cfg.label_delimiter)
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
    return Document(doc_id, text, tuple(labels), given_split)


def normalized_text_hash(text: str) -> int:
    """A 64-bit hash of the text with case and whitespace folded.

    Two documents with the same hash are exact duplicates up to case and
    spacing (``preprocess.dedupe``). Stable across processes and workers,
    unlike Python's ``hash``.
    """
    folded = " ".join(text.casefold().split())
    digest = hashlib.blake2b(folded.encode("utf-8", "surrogatepass"), digest_size=8).digest()
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


def iter_csv_rows(binary_stream, source: str):
    """Yields ``(row_dict, None)`` or ``(None, dead_letter)`` for each CSV row.

    Undecodable bytes are kept as surrogates so that the row can still be
    split and then dead-lettered with reason ``invalid_utf8`` by the parser.
    A row whose field count differs from the header's is ``invalid_csv``.
    A UTF-8 byte order mark (Excel writes one) is dropped, so the first
    column keeps its plain name.
    """
    import csv
    import io

    stream = io.TextIOWrapper(
        binary_stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield None, dead_letter(source, INVALID_CSV, f"row after line {line}: {e}", "")
            return  # the csv module cannot resynchronise after a hard error
        line = reader.line_num
        if not fields:
            continue  # a blank line is not a record in CSV
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


def parse_unlabeled(raw, cfg: DataConfig) -> tuple[str, str]:
    """``(id, text)`` of a record to be tagged: labels and split, if any, are ignored.

    The text and id rules are the training data's (`document_from_row`), so
    a corpus is read the same way for training and for batch tagging.

    Raises:
        BadRecord: with the reason the record cannot be tagged.
    """
    if not isinstance(raw, dict):
        raw = _parse_json_object(_decode_line(raw) if isinstance(raw, bytes) else raw)
    text = _text_of(raw, cfg)
    return _id_of(raw, cfg, text), text


def parse_record(raw, cfg: DataConfig) -> Document:
    """Parses a JSONL line (bytes or str) or a CSV row (dict) into a Document.

    Raises:
        BadRecord: with the reason the record cannot be used.
    """
    if isinstance(raw, dict):
        return document_from_row(raw, cfg)
    text = _decode_line(raw) if isinstance(raw, bytes) else raw
    return document_from_row(_parse_json_object(text), cfg)
