"""Batch tagging as a Beam job (RunInference) and `doctags predict` for a few texts."""

import glob
import gzip
import json
import logging
import os
import subprocess
import sys

import pytest

from doctags.cli import main
from doctags_core.tagger import Tagger
from serving.batch_tagging import TaggingJob, run_tagging
from tests.conftest import REPO, reuters_records, write_jsonl


def _rows(output_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(output_dir, "part-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


@pytest.fixture(scope="module")
def reuters_test_split(tmp_path_factory):
    """Every document of the Reuters test split, as a user's JSONL to tag."""
    records = [r for r in reuters_records(limit_train=0) if r["split"] == "test"]
    path = tmp_path_factory.mktemp("to_tag") / "reuters-test.jsonl.gz"
    return write_jsonl(str(path), records, compress=True), records


def test_tags_equal_the_in_process_model_on_every_reuters_test_document(
    serving_export, reuters_test_split, tmp_path, caplog
):
    corpus, records = reuters_test_split
    out = str(tmp_path / "tagged")
    with caplog.at_level(logging.INFO):
        summary = run_tagging(TaggingJob(serving_export.export_dir, (corpus,), out))
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]
    assert any("FnApiRunner" in r.getMessage() for r in caplog.records)
    assert summary["records_read"] == len(records) == 3019
    assert summary["rows_written"] == len(records) and summary["dead_letter"]["total"] == 0
    assert summary["all_records_accounted_for"]
    by_id = {row["id"]: row for row in _rows(out)}
    assert len(by_id) == len(records)
    texts = [r["text"] for r in records]
    expected = Tagger(serving_export.export_dir).predict(texts)
    tagged = 0
    for record, pairs in zip(records, expected):
        row = by_id[record["id"]]
        assert row["tags"] == [t for t, _ in pairs], record["id"]
        assert row["tag_scores"] == pytest.approx([s for _, s in pairs], abs=1e-6)
        tagged += bool(pairs)
    assert tagged > 100  # not vacuous: many documents get tags


def test_bad_rows_are_dead_letters_and_every_record_is_accounted_for(serving_export, tmp_path):
    good = reuters_records(limit_train=0, limit_test=20)
    good = [r for r in good if r["split"] == "test"]
    path = tmp_path / "mixed.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in good[:10]:
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "no-text", "labels": []}) + "\n")
        f.write(json.dumps({"text": "no id here"}) + "\n")
        for r in good[10:]:
            f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")  # labels not needed
    out = str(tmp_path / "out")
    job = TaggingJob(serving_export.export_dir, (str(path),), out, with_scores=True)
    summary = run_tagging(job)
    assert summary["records_read"] == len(good) + 3
    assert summary["rows_written"] == len(good)
    assert summary["dead_letter"]["by_reason"] == {
        "invalid_json": 1,
        "missing_text": 1,
        "missing_id": 1,
    }
    rows = _rows(out)
    labels = Tagger(serving_export.export_dir).labels
    assert all(len(row["scores"]) == len(labels) for row in rows)
    dead = []
    for p in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")):
        dead += [json.loads(line) for line in open(p, encoding="utf-8")]
    assert sorted(d["reason"] for d in dead) == ["invalid_json", "missing_id", "missing_text"]
    assert all(d["source"].endswith("mixed.jsonl") for d in dead)
    with pytest.raises(FileExistsError):  # results are never mixed with an earlier run's
        run_tagging(job)


def test_predict_cli_tags_a_csv_corpus_with_other_field_names(serving_export, tmp_path, capsys):
    path = tmp_path / "headlines.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("key,headline\n")
        f.write('a1,"Crude oil prices rose, OPEC said"\n')
        f.write("a2,Net profit up 5 pct\n")
    out = str(tmp_path / "tagged")
    argv = ["predict", "--model", serving_export.export_dir, "--input", str(path)]
    argv += ["--output", out, "--text-field", "headline", "--id-field", "key"]
    assert main(argv) == 0
    assert "2 records read" in capsys.readouterr().out
    assert sorted(row["id"] for row in _rows(out)) == ["a1", "a2"]


def test_predict_from_a_file_keeps_one_row_per_line_and_streams(serving_export, tmp_path):
    lines = ["Crude oil prices rose", "", "Net profit 5 mln dlrs", "   ", "Wheat exports fell"]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "doctags", "predict", "--model", serving_export.export_dir]
        + ["--input", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["text"] for row in rows] == lines  # 5 lines in, 5 rows out, in order
