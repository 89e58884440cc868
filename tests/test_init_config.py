"""`doctags init`: field detection on tutorial-shaped data, the commented config, and a real run."""

import json
import os

import pytest
import yaml

from doctags.cli import main
from doctags_core import records
from doctags_core.config import load_config
from doctags_core.data_sample import SampleError, read_sample
from doctags_core.field_detection import DetectionError, propose
from doctags_core.init_config import experiment_name, write_init_config
from tests.tutorial_data import (
    headline_records,
    movie_rows,
    write_headlines_jsonl,
    write_movie_csv,
    write_parquet,
)


def proposal_of(path, **kwargs):
    return propose(read_sample(str(path), **kwargs).rows)


def test_movie_csv_like_the_first_tutorial(tmp_path):
    p = proposal_of(write_movie_csv(tmp_path / "mpst.csv"))
    assert p.text_fields == ("title", "plot_synopsis")
    assert (p.label.field, p.label.form, p.label.delimiter) == ("tags", "delimited", ",")
    # "earn, acq ,crude": the names come out stripped, as the Beam job reads them.
    assert all(name == name.strip() and name for name in p.label.counts)
    assert p.label.counts["earn"] > 50
    assert "synopsis_source" in [g.field for g in p.label_alternatives]
    assert p.id_field == "imdb_id"
    assert p.split.field == "split"
    assert p.split.meaning == {"train": "train", "test": "test", "val": "validation"}


def test_headlines_jsonl_like_the_second_tutorial(tmp_path):
    p = proposal_of(write_headlines_jsonl(tmp_path / "news.jsonl"))
    assert p.text_fields == ("headline", "short_description")
    assert (p.label.field, p.label.form) == ("tags", "list")
    assert "authors" not in p.text_fields and p.label.field != "authors"
    assert p.id_field is None  # no id field: null, the text's hash
    assert p.split is None


@pytest.mark.parametrize("delimiter", ["|", ";"])
def test_other_label_delimiters_are_detected(tmp_path, delimiter):
    rows = movie_rows(120, 40)
    for row in rows:
        row["tags"] = row["tags"].replace(",", delimiter)
    p = proposal_of(write_movie_csv(tmp_path / "m.csv", rows))
    assert (p.label.field, p.label.form, p.label.delimiter) == ("tags", "delimited", delimiter)


def test_json_lists_inside_csv_cells(tmp_path):
    rows = movie_rows(120, 40)
    for row in rows:
        row["tags"] = json.dumps([t.strip() for t in row["tags"].split(",")])
    p = proposal_of(write_movie_csv(tmp_path / "m.csv", rows))
    assert (p.label.field, p.label.form) == ("tags", "json_list")


def test_one_category_per_record_is_a_single_label_field(tmp_path):
    records_ = [
        {"headline": r["headline"], "category": r["tags"][0]} for r in headline_records(200, 50)
    ]
    p = proposal_of(write_headlines_jsonl(tmp_path / "c.jsonl", records_))
    assert (p.label.field, p.label.form) == ("category", "single")


def test_bom_csv_names_its_first_column_plainly(tmp_path):
    path = write_movie_csv(tmp_path / "excel.csv", bom=True)
    assert open(path, "rb").read(3) == b"\xef\xbb\xbf"
    sample = read_sample(path)
    assert list(sample.rows[0])[0] == "imdb_id"
    assert propose(sample.rows).id_field == "imdb_id"
    with open(path, "rb") as stream:  # the Beam job's CSV reader agrees
        row, dead = next(records.iter_csv_rows(stream, path))
    assert dead is None and "imdb_id" in row


def test_gzip_inputs_give_the_same_proposal(tmp_path):
    plain = proposal_of(write_movie_csv(tmp_path / "m.csv"))
    gz = proposal_of(write_movie_csv(tmp_path / "m.csv.gz", compress=True))
    assert (gz.text_fields, gz.label.field, gz.id_field) == (
        plain.text_fields,
        plain.label.field,
        plain.id_field,
    )
    news = proposal_of(write_headlines_jsonl(tmp_path / "n.jsonl.gz", compress=True))
    assert news.label.form == "list" and news.text_fields == ("headline", "short_description")


def test_parquet_with_list_labels(tmp_path):
    p = proposal_of(write_parquet(tmp_path / "news.parquet", headline_records(150, 50)))
    assert (p.label.field, p.label.form) == ("tags", "list")
    assert p.text_fields == ("headline", "short_description")


def test_format_is_sniffed_when_the_extension_says_nothing(tmp_path):
    path = tmp_path / "export.txt"
    os.rename(write_headlines_jsonl(tmp_path / "n.jsonl"), path)
    assert read_sample(str(path)).format == "jsonl"
    os.rename(write_movie_csv(tmp_path / "m.csv"), path)
    assert read_sample(str(path)).format == "csv"


def test_sample_is_uniform_over_the_scanned_records(tmp_path):
    """A file sorted by split: a first-rows sample would see no test row at all."""
    rows = sorted(movie_rows(300, 100), key=lambda r: r["split"] != "train")
    path = write_movie_csv(tmp_path / "sorted.csv", rows)
    sample = read_sample(path, size=60, scan=400)
    assert len(sample.rows) == 60 and sample.complete
    assert {r["split"] for r in sample.rows} == {"train", "val", "test"}


def test_split_field_without_test_rows_is_not_used(tmp_path):
    rows = [r for r in movie_rows(200, 0) if r["split"] != "test"]
    p = proposal_of(write_movie_csv(tmp_path / "m.csv", rows))
    assert p.split is None
    assert p.split_rejected == (
        ("split", "has no test rows in the sample: the test split would be empty"),
    )


def test_no_label_field_names_every_field(tmp_path):
    path = write_headlines_jsonl(
        tmp_path / "x.jsonl", [{"text": f"document number {i} " * 5, "n": i} for i in range(50)]
    )
    with pytest.raises(DetectionError, match=r"no field looks like labels.*text \(text"):
        proposal_of(path)
    with pytest.raises(SampleError, match="no file matches"):
        read_sample(str(tmp_path / "absent-*.csv"))


def test_written_config_is_commented_valid_and_what_it_says(tmp_path):
    rows = movie_rows(120, 40)
    rows[5]["tags"] = ""  # one record without labels
    (tmp_path / "data").mkdir()
    data = write_movie_csv(tmp_path / "data" / "mpst.csv", rows)
    out = tmp_path / "configs" / "mpst.yaml"
    result = write_init_config(data, str(out))
    text = out.read_text()
    assert yaml.safe_load(text) == result.raw
    cfg = load_config(str(out))
    assert cfg.data.input_pattern == (os.path.abspath(data),)
    assert cfg.output_dir == str(tmp_path / "configs" / "runs" / "mpst")
    assert cfg.data.text_fields == ("title", "plot_synopsis")
    assert (cfg.data.label_field, cfg.data.label_delimiter) == ("tags", ",")
    assert (cfg.data.id_field, cfg.data.split_field) == ("imdb_id", "split")
    assert cfg.data.validation_fraction == 0.0  # the data has its own validation rows
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for said in (
        "val (",
        "-> validation",
        'names separated by ","',
        "Other candidates: synopsis_source",
        "[plot_synopsis] alone",
        "1 of 160 sampled records have no label",
        "allow_unlabeled",
        "doctags config --explain",
    ):
        assert said in comments or said in text, said
    with pytest.raises(FileExistsError, match="--force"):
        write_init_config(data, str(out))


def test_init_cli_and_its_summary(tmp_path, capsys):
    data = write_headlines_jsonl(tmp_path / "news.jsonl.gz", compress=True)
    out = tmp_path / "news.yaml"
    assert main(["init", "--input", data, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "label_field   tags: lists" in said and "null (a SHA-1 of the text)" in said
    assert f"run --config {os.path.relpath(out)}" in said or f"run --config {out}" in said
    assert load_config(str(out)).data.id_field is None
    assert main(["init", "--input", data, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["init", "--input", str(tmp_path / "nothing.csv")]) == 2


def test_experiment_name_from_the_file_name():
    assert experiment_name("data/MPST Corpus.csv.gz") == "mpst-corpus"
    assert experiment_name("/x/news.jsonl") == "news"
    assert experiment_name("*.csv") == "doctags"


def test_init_then_a_real_run(tmp_path, capsys, monkeypatch):
    """The issue's path: a tutorial-shaped CSV, `doctags init`, then `doctags run` as is."""
    monkeypatch.chdir(tmp_path)  # as a user would: paths are shown relative to here
    write_movie_csv(tmp_path / "mpst.csv", movie_rows(240, 80))
    assert main(["init", "--input", "mpst.csv"]) == 0  # writes mpst.yaml here
    config = tmp_path / "mpst.yaml"
    tiny = ["model.family=dnn", "model.sequence_length=64", "model.embedding_dim=16"]
    tiny += ["model.hidden_units=16", "training.epochs=1", "preprocess.min_count=1"]
    argv = ["run", "--config", str(config)] + [x for kv in tiny for x in ("--set", kv)]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    cfg = load_config(str(config))
    metadata = json.load(open(os.path.join(cfg.data_dir, "metadata.json")))
    assert metadata["dead_letter"]["total"] == 0
    assert metadata["documents"]["test"] == 80  # the data's own test rows
    assert metadata["documents"]["validation"] == sum(
        1 for r in movie_rows(240, 80) if r["split"] == "val"
    )
    # The closing lines name every artifact, and each exists.
    tail = out[out.index("where everything is:") :]
    for what, path in (
        ("data", cfg.data_dir),
        ("model", os.path.join(cfg.model_dir, "model.keras")),
        ("TensorBoard", os.path.join(cfg.model_dir, "logs")),
        ("export", cfg.export_dir),
        ("metrics", os.path.join(cfg.eval_dir, "metrics_test.json")),
        ("report", os.path.join(cfg.eval_dir, "report_test.html")),
    ):
        line = next(x for x in tail.splitlines() if x.strip().startswith(what + " "))
        shown = line.split()[1]
        assert os.path.samefile(shown, path), line
    assert "predict --model runs/mpst/export/mpst 'text to tag'" in tail
    assert "serve --model-base-path runs/mpst/export/mpst --model-name mpst" in tail
    assert "tensorboard --logdir runs/mpst/model/logs" in tail
    # Run again: the same rule as `doctags export`, before any work.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "export.version=2" in err
