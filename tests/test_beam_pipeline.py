import csv
import glob
import gzip
import json
import os

import apache_beam as beam
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_preprocess import transforms
from beam_preprocess.pipeline import run_preprocess
from doctags_core import beam_io, records, schema
from doctags_core.config import DataConfig, PreprocessConfig, load_config
from tests.conftest import reuters_records, small_config

DIRECT = ["--runner=DirectRunner"]
CFG = DataConfig(input_pattern=("x",), split_field="split")


def test_parse_documents_transform_separates_dead_letters():
    rows = [
        ("a.jsonl", b'{"id": "1", "text": "Oil prices rose", "labels": ["crude"]}'),
        ("a.jsonl", b'{"id": "2", "text": "Wheat", "labels": "grain, wheat"}'),
        ("a.jsonl", b'{"id": "3", "text": "x"'),
        ("a.jsonl", b'{"id": "4", "labels": ["a"]}'),
        ("a.jsonl", b'{"id": "5", "text": "\xff", "labels": ["a"]}'),
    ]
    with TestPipeline(argv=DIRECT) as p:
        out = (
            p
            | "Batches" >> beam.Create([rows[:2], rows[2:]])  # readers emit record batches
            | "Parse" >> transforms.ParseDocuments(CFG, batch_size=2)
        )
        ids = out.docs | "Ids" >> beam.FlatMap(lambda docs: [d.doc_id for d in docs])
        reasons = out[beam_io.DEAD_LETTER_TAG] | "Reasons" >> beam.Map(
            lambda d: (d["source"], d["reason"])
        )
        assert_that(ids, equal_to(["1", "2"]), label="GoodIds")
        assert_that(
            reasons,
            equal_to(
                [
                    ("a.jsonl", "invalid_json"),
                    ("a.jsonl", "missing_text"),
                    ("a.jsonl", "invalid_utf8"),
                ]
            ),
            label="DeadReasons",
        )


def _docs(texts, splits):
    return [
        records.Document(str(i), text, ("a",), split)
        for i, (text, split) in enumerate(zip(texts, splits))
    ]


def test_compute_vocabulary_counts_train_only_with_min_count_and_top_k():
    cfg = DataConfig(input_pattern=("x",), validation_fraction=0.0)
    batches = [
        _docs(["oil oil wheat", "oil corn"], ["train", "train"]),
        _docs(["wheat oil rare", "secret secret secret"], ["train", "test"]),
    ]
    pcfg = PreprocessConfig(vocab_size=2, min_count=2, vocab_shards=3)
    with TestPipeline(argv=DIRECT) as p:
        encoded = p | beam.Create(batches) | transforms.CleanAndEncode(["lowercase"], cfg, pcfg)
        vocab = encoded.token_counts | transforms.ComputeVocabulary(pcfg)
        # (count, token, document_count); "secret" is test-only, "rare"/"corn" < min_count
        assert_that(vocab, equal_to([[(4, b"oil", 3), (2, b"wheat", 2)]]))


def _planted_rows():
    """Bad rows of every kind, each with the reason it must be dead-lettered for."""
    return [
        (b'{"id": "bad-json", "text": "x", "labels": ["a"]', "invalid_json"),
        (b'"just a string"', "invalid_json"),
        (b'{"id": "bad-utf8", "text": "caf\xe9 \xff", "labels": ["earn"]}', "invalid_utf8"),
        (b'{"id": "no-text", "labels": ["earn"]}', "missing_text"),
        (b'{"id": "empty-text", "text": "  ", "labels": ["earn"]}', "missing_text"),
        (b'{"id": "no-labels", "text": "Profits rose"}', "missing_labels"),
        (b'{"id": "empty-labels", "text": "Profits rose", "labels": []}', "missing_labels"),
        (b'{"text": "no id here", "labels": ["earn"]}', "missing_id"),
    ]


def test_planted_bad_rows_are_all_accounted_for(tmp_path):
    good = reuters_records(120, 40)
    planted = _planted_rows()
    lines = [json.dumps(r).encode() for r in good]
    for i, (raw, _) in enumerate(planted):
        lines.insert(7 * i + 3, raw)
    jsonl = tmp_path / "mixed.jsonl.gz"
    with gzip.open(jsonl, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    # A CSV file too: two good rows (one with a quoted newline), one short row.
    csv_path = tmp_path / "extra.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "labels", "split"])
        w.writerow(["csv-1", "Grain exports\nrose sharply", "grain, wheat", "train"])
        w.writerow(["csv-2", "Crude oil output fell", "crude", "test"])
        w.writerow(["csv-short", "only two"])
    cfg = load_config(
        small_config(tmp_path, "unused"),
        {"data.input_pattern": [str(jsonl), str(csv_path)]},
    )
    stale = os.path.join(cfg.data_dir, ".temp-killed-run")  # a killed run's leftovers
    os.makedirs(stale)
    open(os.path.join(stale, "train-x.tfrecord.gz"), "wb").close()
    metadata = run_preprocess(cfg, DIRECT)
    assert not os.path.exists(stale)

    n_good = len(good) + 2
    n_bad = len(planted) + 1
    assert metadata["records_read"] == len(lines) + 3
    assert metadata["documents"]["total"] == n_good
    assert metadata["dead_letter"]["total"] == n_bad
    assert metadata["all_records_accounted_for"] is True
    assert metadata["all_documents_written"] is True

    dead = [
        json.loads(line)
        for path in glob.glob(os.path.join(cfg.data_dir, "dead_letter", "*.jsonl"))
        for line in open(path, encoding="utf-8")
    ]
    got = sorted((d["reason"], d["record"][:40]) for d in dead)
    want = sorted(
        [(reason, raw.decode("utf-8", "backslashreplace")[:40]) for raw, reason in planted]
        + [("invalid_csv", "csv-short,only two")]
    )
    assert got == want
    expected_reasons = {}
    for _, reason in planted:
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    expected_reasons["invalid_csv"] = 1
    assert metadata["dead_letter"]["by_reason"] == expected_reasons

    written = {}
    for split in ("train", "validation", "test"):
        files = glob.glob(schema.split_pattern(cfg.data_dir, split))
        assert files, split
        for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            ex = tf.train.Example.FromString(rec.numpy())
            doc_id = ex.features.feature["id"].bytes_list.value[0].decode()
            written[doc_id] = split
    assert sorted(written) == sorted([r["id"] for r in good] + ["csv-1", "csv-2"])
    assert all(written[r["id"]] == "test" for r in good if r["split"] == "test")
    assert written["csv-2"] == "test"
    # every file the job promises is there, with the config next to it
    for name in (
        "vocab.txt",
        "vocab_counts.tsv",
        "labels.txt",
        "label_counts.tsv",
        "metadata.json",
        "config.yaml",
    ):
        assert os.path.getsize(os.path.join(cfg.data_dir, name)) > 0, name
    labels = open(os.path.join(cfg.data_dir, "labels.txt")).read().split()
    assert labels[0] == "earn"  # most frequent label first
