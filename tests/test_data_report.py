"""Issue 13: the data report says plainly what went wrong with a corpus.

Unit tests of the pure checks (`doctags_core.data_checks`) on metadata
dicts, then the real CLI on a tutorial-shaped movie CSV.
"""

import copy
import csv
import glob
import os
import random

import pytest

from doctags.cli import main
from doctags_core import data_checks
from doctags_core.config import config_from_dict
from tests.conftest import REUTERS, reuters_records

CFG = config_from_dict(
    {"data": {"input_pattern": REUTERS, "text_fields": ["title", "plot"], "split_field": "split"}}
)


def _metadata(**changes):
    """The metadata of a healthy run (200 records, 3 labels), with changes."""
    meta = {
        "run_id": "r1",
        "records_read": 200,
        "documents": {"train": 150, "validation": 20, "test": 30, "total": 200},
        "dead_letter": {"total": 0, "by_reason": {}, "examples": {}},
        "label_vocabulary_size": 3,
        "label_counts": {
            "drama": {"train": 80, "validation": 10, "test": 15},
            "murder": {"train": 50, "validation": 6, "test": 9},
            "comedy": {"train": 40, "validation": 5, "test": 8},
        },
        "token_lengths": {"documents": 200, "mean": 63.0},
        "truncated_documents": 0,
        "max_chars": 100000,
        "fields": {
            "records": 200,
            "present": {"title": 200, "plot": 200, "labels": 200, "id": 200, "split": 200},
            "with_text": {"title": 200, "plot": 199},
            "seen": {"id": 200, "title": 200, "plot": 200, "labels": 200, "split": 200},
        },
    }
    for key, value in changes.items():
        meta[key] = value
    return meta


def _checks(report):
    return [(f["severity"], f["check"]) for f in report["findings"]]


def test_a_healthy_run_has_no_finding():
    report = data_checks.check_data(_metadata(), CFG)
    assert report == {"run_id": "r1", "errors": 0, "warnings": 0, "findings": []}
    assert not data_checks.rejected(report, strict=True)


def test_a_text_field_missing_in_most_records_is_named_with_the_fields_seen():
    fields = copy.deepcopy(_metadata()["fields"])
    fields["with_text"]["plot"] = 0
    fields["present"]["plot"] = 0
    fields["seen"] = {"id": 200, "title": 200, "plot_synopsis": 200, "labels": 200}
    report = data_checks.check_data(_metadata(fields=fields), CFG)
    assert _checks(report) == [("error", "text_field")]
    message = report["findings"][0]["message"]
    assert message.startswith("data.text_fields: 'plot' holds text in 0 of 200 (0.0%) records")
    assert "plot_synopsis" in message
    fields["with_text"]["plot"] = 60  # 30%: present, but empty in most records
    assert _checks(data_checks.check_data(_metadata(fields=fields), CFG)) == [
        ("warning", "text_field")
    ]


def test_an_id_or_label_field_in_no_record_is_an_error_a_split_field_a_warning():
    fields = copy.deepcopy(_metadata()["fields"])
    fields["present"].update({"id": 0, "split": 0})
    report = data_checks.check_data(_metadata(fields=fields), CFG)
    assert _checks(report) == [("error", "field"), ("warning", "field")]
    assert "set data.id_field: null" in report["findings"][0]["message"]


def test_too_many_dead_letters_name_the_top_reasons_with_an_example():
    dead = {
        "total": 150,
        "by_reason": {"missing_id": 120, "invalid_json": 10, "duplicate": 20},
        "examples": {"missing_id": {"source": "a.jsonl", "detail": "no field 'id'"}},
    }
    report = data_checks.check_data(_metadata(dead_letter=dead), CFG)
    assert _checks(report) == [("error", "dead_letters")]
    message = report["findings"][0]["message"]
    assert "130 of 200 (65.0%) records are dead letters" in message  # duplicates excluded
    assert "missing_id 120 (e.g. no field 'id'); invalid_json 10" in message
    few = {"total": 20, "by_reason": {"missing_id": 20}, "examples": {}}
    assert data_checks.check_data(_metadata(dead_letter=few), CFG)["errors"] == 0


def test_no_training_document_or_label_and_very_short_documents():
    empty = _metadata(
        documents={"train": 0, "validation": 0, "test": 0, "total": 0},
        label_vocabulary_size=0,
        label_counts={},
        token_lengths={"documents": 0},
    )
    assert _checks(data_checks.check_data(empty, CFG)) == [
        ("error", "documents"),
        ("error", "labels"),
    ]
    short = _metadata(token_lengths={"documents": 200, "mean": 2.35})
    report = data_checks.check_data(short, CFG)
    assert _checks(report) == [("warning", "tokens")]
    assert "2.35 tokens on average" in report["findings"][0]["message"]


def test_labels_that_look_delimited_name_the_delimiter_to_set():
    combos = {
        "murder|violence": {"train": 30, "validation": 3, "test": 5},
        "drama|romance|comedy": {"train": 20, "validation": 2, "test": 3},
        "drama": {"train": 10, "validation": 1, "test": 2},
    }
    report = data_checks.check_data(_metadata(label_counts=combos), CFG)
    assert _checks(report) == [("error", "label_delimiter")]
    assert "set data.label_delimiter: '|'" in report["findings"][0]["message"]
    paths = {k.replace("|", "/"): v for k, v in combos.items()}
    assert _checks(data_checks.check_data(_metadata(label_counts=paths), CFG)) == [
        ("warning", "label_delimiter")  # sci/physics-like hierarchies are common
    ]
    piped = config_from_dict(
        {
            "data": {
                "input_pattern": REUTERS,
                "text_fields": ["title", "plot"],
                "label_delimiter": "|",
            }
        }
    )
    assert data_checks.check_data(_metadata(label_counts=combos), piped)["findings"] == []


def test_labels_with_one_example_are_a_warning_that_strict_makes_an_error():
    counts = copy.deepcopy(_metadata()["label_counts"])
    counts["heist"] = {"train": 1, "validation": 0, "test": 0}
    counts["only-in-test"] = {"train": 0, "validation": 0, "test": 4}
    report = data_checks.check_data(_metadata(label_counts=counts), CFG)
    assert _checks(report) == [("warning", "rare_labels")]
    assert report["findings"][0]["message"].startswith("1 of 4 labels have a single training")
    assert not data_checks.rejected(report) and data_checks.rejected(report, strict=True)
    assert data_checks.format_report(report).startswith("data report: 0 error(s), 1 warning(s)")
    strict = data_checks.format_report(report, strict=True)
    assert strict.splitlines()[0] == "data report: 1 error(s), 0 warning(s)"
    assert strict.splitlines()[1].startswith("  ERROR   ")


# ---------------------------------------------------------------- end to end
TAGS = ["murder", "violence", "flashback", "romance", "comedy", "drama", "revenge", "cult"]


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """A tutorial-shaped movie CSV: title, plot_synopsis, tags, split (train/test/val)."""
    tmp = tmp_path_factory.mktemp("movies")
    rng = random.Random(3)
    plots = [r["text"] for r in reuters_records(160, 0)]
    rows = []
    for i, plot in enumerate(plots):
        tags = rng.sample(TAGS[:-1], 2)
        raw = " ,".join(tags) if i % 2 else ", ".join(tags)  # "murder, violence ,flashback"
        split = ["train", "train", "train", "train", "test", "val"][i % 6]
        rows.append([f"Movie number {i}", plot, raw, split])
    rows[0][2] += ", cult"  # one tag seen once
    path = tmp / "mpst.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "plot_synopsis", "tags", "split"])
        writer.writerows(rows)
    piped = tmp / "mpst-piped.csv"
    with open(piped, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "plot_synopsis", "tags", "split"])
        writer.writerows(
            [[t, p, tags.replace(" ,", "|").replace(", ", "|"), s] for t, p, tags, s in rows]
        )
    return path, piped


def _movie_config(tmp_path, csv_path, text_fields):
    import yaml

    raw = {
        "name": "movies",
        "output_dir": str(tmp_path / "run"),
        "data": {
            "input_pattern": str(csv_path),
            "id_field": None,
            "text_fields": text_fields,
            "label_field": "tags",
            "split_field": "split",
        },
        "preprocess": {"batch_size": 64, "min_count": 1, "num_shards": 1},
        "model": {"family": "dnn", "sequence_length": 32, "embedding_dim": 8, "hidden_units": 8},
        "training": {"batch_size": 32, "epochs": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_misspelled_text_field_stops_the_run_before_any_work(movies, tmp_path, capsys):
    config = _movie_config(tmp_path, movies[0], ["title", "plot"])
    assert main(["run", "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("doctags run: error: data.text_fields: 'plot' is not a column of ")
    assert "'plot_synopsis'" in err[0]  # the columns the file does have
    assert not os.path.exists(tmp_path / "run")


def test_pipe_delimited_tags_stop_run_before_training(movies, tmp_path, capsys):
    config = _movie_config(tmp_path, movies[1], ["title", "plot_synopsis"])
    assert main(["run", "--config", config]) == 3
    err = capsys.readouterr().err
    assert "labels look '|'-delimited" in err and "set data.label_delimiter: '|'" in err
    assert not os.path.exists(tmp_path / "run" / "data")  # nothing published
    assert not os.path.exists(tmp_path / "run" / "model")  # training never started
    (rejected,) = glob.glob(str(tmp_path / "run" / ".data-staging-*"))
    assert os.path.exists(os.path.join(rejected, "report.json")) and rejected in err


def test_the_report_is_printed_and_strict_turns_its_warnings_into_errors(movies, tmp_path, capsys):
    config = _movie_config(tmp_path, movies[0], ["title", "plot_synopsis"])
    assert main(["preprocess", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "data report: 0 error(s), 1 warning(s)" in out and "'cult'" in out
    labels = open(tmp_path / "run" / "data" / "labels.txt").read().split()
    assert sorted(labels) == sorted(TAGS)  # "murder, violence ,flashback" split and stripped
    published = sorted(glob.glob(str(tmp_path / "run" / "data" / "train" / "*")))
    assert main(["preprocess", "--config", config, "--strict"]) == 3
    assert "ERROR   1 of 8 labels have a single training example" in capsys.readouterr().err
    assert sorted(glob.glob(str(tmp_path / "run" / "data" / "train" / "*"))) == published
