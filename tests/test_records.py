import io

import pytest

from doctags_core import records
from doctags_core.config import DataConfig
from doctags_core.labels import LabelError, parse_labels
from doctags_core.splits import assign_split

CFG = DataConfig(input_pattern=("x",), split_field="split")


@pytest.mark.parametrize(
    "value,expected",
    [
        (["a", "b"], ["a", "b"]),
        ("drama, murder ,violence", ["drama", "murder", "violence"]),
        ("drama,, ,murder,drama", ["drama", "murder"]),
        ('["x", " y "]', ["x", "y"]),
        ([], []),
    ],
)
def test_parse_labels(value, expected):
    assert parse_labels(value) == expected


def test_parse_labels_rejects_non_names():
    with pytest.raises(LabelError):
        parse_labels(None)
    with pytest.raises(LabelError):
        parse_labels({"a": 1})
    with pytest.raises(LabelError):
        parse_labels([["nested"]])


def test_good_jsonl_record():
    doc = records.parse_record(b'{"id": 7, "text": "Hi", "labels": "a, b", "split": "dev"}', CFG)
    assert doc == records.Document("7", "Hi", ("a", "b"), "validation")


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b'{"id": 1, "text": "caf\xe9", "labels": ["a"]}', records.INVALID_UTF8),
        # JSON escapes of lone surrogates: valid JSON, but no UTF-8 text (ASCII on disk).
        (b'{"id": 1, "text": "bad \\ud800 half", "labels": ["a"]}', records.INVALID_UTF8),
        (b'{"id": 1, "text": "caf\xc3\xa9 \\udfff", "labels": ["a"]}', records.INVALID_UTF8),
        (b'{"id": 1, "text": "x", "labels": ["a"]', records.INVALID_JSON),
        (b"[1, 2]", records.INVALID_JSON),
        (b"", records.INVALID_JSON),
        (b'{"id": 1, "labels": ["a"]}', records.MISSING_TEXT),
        (b'{"id": 1, "text": "   ", "labels": ["a"]}', records.MISSING_TEXT),
        (b'{"id": 1, "text": 5, "labels": ["a"]}', records.MISSING_TEXT),
        (b'{"id": 1, "text": "x"}', records.MISSING_LABELS),
        (b'{"id": 1, "text": "x", "labels": null}', records.MISSING_LABELS),
        (b'{"id": 1, "text": "x", "labels": " , "}', records.MISSING_LABELS),
        (b'{"id": 1, "text": "x", "labels": {"a": 1}}', records.INVALID_LABELS),
        (b'{"text": "x", "labels": ["a"]}', records.MISSING_ID),
        (b'{"id": 1, "text": "x", "labels": ["a"], "split": "holdout"}', records.INVALID_SPLIT),
    ],
)
def test_bad_records_have_reasons(raw, reason):
    with pytest.raises(records.BadRecord) as e:
        records.parse_record(raw, CFG)
    assert e.value.reason == reason


def test_unlabeled_allowed_when_configured():
    cfg = DataConfig(input_pattern=("x",), allow_unlabeled=True)
    assert records.parse_record(b'{"id": 1, "text": "x", "labels": []}', cfg).labels == ()


def test_multiple_text_fields_are_joined_and_id_can_be_derived():
    cfg = DataConfig(input_pattern=("x",), text_fields=("title", "body"), id_field=None)
    doc = records.parse_record(b'{"title": "T", "body": "B", "labels": ["a"]}', cfg)
    assert doc.text == "T\nB"
    assert len(doc.doc_id) == 40


def test_csv_rows_quoted_newlines_and_bad_rows():
    data = 'id,text,labels\n1,"multi\nline",a\n2,short\n3,"caf\xe9",b\n'.encode("latin-1")
    rows = list(records.iter_csv_rows(io.BytesIO(data), "f.csv"))
    assert rows[0] == ({"id": "1", "text": "multi\nline", "labels": "a"}, None)
    assert rows[1][0] is None and rows[1][1]["reason"] == records.INVALID_CSV
    bad_utf8_row = rows[2][0]
    with pytest.raises(records.BadRecord) as e:
        records.parse_record(bad_utf8_row, DataConfig(input_pattern=("x",)))
    assert e.value.reason == records.INVALID_UTF8


def test_split_assignment_is_deterministic_and_keeps_test():
    assert assign_split("doc-1", "test", 0.5, 0.0) == "test"
    picks = [assign_split(f"d{i}", "train", 0.2, 0.0) for i in range(2000)]
    assert picks == [assign_split(f"d{i}", "train", 0.2, 0.0) for i in range(2000)]
    share = picks.count("validation") / len(picks)
    assert 0.17 < share < 0.23
    no_split = [assign_split(f"d{i}", None, 0.1, 0.1) for i in range(2000)]
    assert 0.07 < no_split.count("test") / 2000 < 0.13


def _json_module_row(raw: bytes) -> dict:
    """`records.row_of` without its orjson fast path: the json module's way."""
    text = records._decode_line(raw)
    return records._parse_json_object(text[1:] if text.startswith("\ufeff") else text)


def _outcome(parse, raw):
    try:
        row = parse(raw)
    except records.BadRecord as e:
        return ("dead letter", e.reason, e.detail)
    return ("row", row, [type(v) for v in row.values()])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "a", "text": "t", "labels": ["x"]}',
        b'{"id": 123456789012345678901234567890, "text": "t", "labels": ["x"]}',  # > 64 bits
        b'{"id": 18446744073709551615, "text": "t", "labels": [1, 2]}',  # the u64 edge
        b'{"id": -9223372036854775809, "text": "t", "labels": []}',  # below i64
        b'{"id": 1.5, "text": "t", "labels": [2.0, 3]}',
        b'{"id": "a", "text": NaN, "labels": Infinity}',  # json accepts these, orjson does not
        b'{"id": "a", "text": "\\ud800 lone", "labels": ["x"]}',  # a lone surrogate escape
        b'\xef\xbb\xbf{"id": "bom", "text": "t", "labels": ["x"]}',
        b'{"id": "a", "id": "b", "text": "t", "labels": ["x"]}',  # the last duplicate wins
        b'{"id": "a", "text": "caf\xc3\xa9", "labels": ["x"], "extra": {"n": 1e400}}',
        b'{"id": "a", "text": "\xff", "labels": ["x"]}',  # invalid UTF-8
        b'["not", "an", "object"]',
        b'{"id": "a", "text": "t", "labels": ["x"]} trailing',
        b"",
    ],
)
def test_jsonl_rows_are_what_the_json_module_gives(raw):
    assert _outcome(records.row_of, raw) == _outcome(_json_module_row, raw)


def test_orjson_parses_the_plain_lines_and_leaves_the_others_to_json():
    assert records._fast_row(b'{"id": "a", "text": "t", "labels": ["x", "y"]}') is not None
    assert records._fast_row(b'{"id": 123456789012345678901234567890, "labels": []}') is None
    assert records._fast_row(b'{"id": "a", "labels": [1.0]}') is None


def _observe_row_by_row(rows, cfg, counts):
    """The per-row reference of `records.observe_rows`."""
    for row in rows:
        counts["rows"] = counts.get("rows", 0) + 1
        for name in (*cfg.text_fields, cfg.label_field, cfg.id_field, cfg.split_field):
            if name is not None and row.get(name) is not None:
                counts[f"present:{name}"] = counts.get(f"present:{name}", 0) + 1
        for name in cfg.text_fields:
            value = row.get(name)
            if isinstance(value, str) and value.strip():
                counts[f"text:{name}"] = counts.get(f"text:{name}", 0) + 1
        for name in row:
            key = f"key:{name}"
            if key in counts:
                counts[key] += 1
            elif counts.get("distinct_keys", 0) < records._MAX_KEYS:
                counts[key] = 1
                counts["distinct_keys"] = counts.get("distinct_keys", 0) + 1


def test_field_counts_of_a_batch_are_those_counted_row_by_row():
    cfg = DataConfig(input_pattern=("x",), text_fields=("title", "text"), split_field="split")
    rows = [
        {"id": "1", "title": "T", "text": "body", "labels": ["a"]},
        {"id": "2", "title": " ", "text": None, "labels": [], "split": "test"},
        {"title": 5, "labels": None, **{f"wild{i}": i for i in range(30)}},
        {"id": "3", "title": "T", "text": "body", "labels": ["a"]},
        {"text": "only", **{f"wild{i}": i for i in range(25, 60)}},
    ]
    for batches in ([rows], [rows[:2], rows[2:]], [[r] for r in rows]):
        got, want = {}, {}
        for batch in batches:
            records.observe_rows(batch, cfg, got)
            _observe_row_by_row(batch, cfg, want)
        assert got == want
    assert got["distinct_keys"] == records._MAX_KEYS
