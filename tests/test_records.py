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
