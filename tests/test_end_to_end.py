"""The whole spine on real data: preprocess -> train -> export -> predict/evaluate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from doctags.cli import main
from doctags_core import data_files, schema
from doctags_core.config import load_config
from tests.conftest import REPO, REUTERS, reuters_records, small_config
from trainer import data as data_lib


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory, reuters_slice):
    tmp = tmp_path_factory.mktemp("e2e")
    config = small_config(tmp, reuters_slice, training={"epochs": 2})
    assert main(["run", "--config", config]) == 0
    return load_config(config)


def test_run_writes_every_artifact_with_its_config(slice_run):
    cfg = slice_run
    for directory in (cfg.data_dir, cfg.model_dir):
        assert os.path.exists(os.path.join(directory, "config.yaml"))
    assert os.path.exists(os.path.join(cfg.export_dir, "saved_model.pb"))
    for asset in ("labels.txt", "vocab.txt", "thresholds.json", "config.yaml"):
        assert os.path.exists(os.path.join(cfg.export_dir, "assets", asset)), asset
    thresholds = json.load(open(os.path.join(cfg.model_dir, "thresholds.json")))
    assert thresholds["split"] == "validation"
    grid = [row["threshold"] for row in thresholds["curve"]]
    assert grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(0.95)
    assert os.path.getsize(os.path.join(cfg.eval_dir, "report_test.html")) > 10000
    report = json.load(open(os.path.join(cfg.eval_dir, "metrics_test.json")))
    assert report["documents"] == 100
    for key in (
        "micro_f1",
        "macro_f1",
        "samples_f1",
        "micro_precision",
        "micro_recall",
        "hamming_loss",
    ):
        assert 0.0 <= report["metrics"][key] <= 1.0
    assert len(report["per_label"]) == len(
        open(os.path.join(cfg.data_dir, "labels.txt")).read().split()
    )


def test_predict_cli_prints_tags_with_scores(slice_run, capsys, tmp_path):
    base_path = os.path.dirname(slice_run.export_dir)  # highest version is picked
    texts = tmp_path / "texts.txt"
    texts.write_text("Net profit rose to 5 mln dlrs\nCrude oil prices fell\n")
    assert (
        main(
            [
                "predict",
                "--model",
                base_path,
                "--json",
                "--input",
                str(texts),
                "Shr 30 cts vs 25 cts net income",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["text"] for x in lines][0] == "Shr 30 cts vs 25 cts net income"
    assert len(lines) == 3
    labels = set(open(os.path.join(slice_run.export_dir, "assets", "labels.txt")).read().split())
    for line in lines:
        scores = [t["score"] for t in line["tags"]]
        assert scores == sorted(scores, reverse=True)
        assert {t["tag"] for t in line["tags"]} <= labels


def test_savedmodel_loads_with_tensorflow_only(slice_run):
    code = (
        "import sys, tensorflow as tf\n"
        f"m = tf.saved_model.load({slice_run.export_dir!r})\n"
        "out = m.signatures['serving_default'](text=tf.constant(['Oil prices rose', '']))\n"
        "assert out['scores'].shape[0] == 2, out\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in "
        "('doctags', 'doctags_core', 'trainer', 'serving', 'beam_preprocess', "
        "'tensorflow_text', 'keras_hub')]\n"
        "assert not bad, bad\n"
        "from tensorflow.core.protobuf import saved_model_pb2\n"
        "from tensorflow.python.framework import op_def_registry\n"
        "sm = saved_model_pb2.SavedModel()\n"
        f"sm.ParseFromString(open({slice_run.export_dir!r} + '/saved_model.pb', 'rb').read())\n"
        "g = sm.meta_graphs[0].graph_def\n"
        "ops = {n.op for n in g.node} | {n.op for f in g.library.function for n in f.node_def}\n"
        "missing = sorted(o for o in ops if op_def_registry.get(o) is None)\n"
        "assert not missing, missing\n"
        "print(len(ops))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 10


def test_config_error_exits_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data:\n  input_pattern: {REUTERS}\ntraining:\n  epochz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "training.epochz" in capsys.readouterr().err


@pytest.fixture(scope="module")
def full_reuters(tmp_path_factory):
    """Every Reuters document preprocessed, and a tiny model exported over it."""
    tmp = tmp_path_factory.mktemp("skew")
    config = small_config(
        tmp,
        REUTERS,
        # Whole documents on both sides: no fitting to the corpus' lengths.
        model={
            "sequence_length": 1000,
            "fit_sequence_length": False,
            "embedding_dim": 8,
            "hidden_units": 8,
        },
        preprocess={"vocab_size": 20000, "min_count": 2, "batch_size": 512},
    )
    for command in (["preprocess"], ["train"], ["export"]):
        assert main([*command, "--config", config]) == 0
    return load_config(config)


def test_no_skew_on_every_reuters_test_document(full_reuters):
    """Exported in-graph cleaning + tokenization == the trainer's ids from Beam output."""
    cfg = full_reuters
    vectorizer = data_lib.make_vectorizer(
        data_files.load_vocabulary(cfg.data_dir), cfg.model.sequence_length
    )
    encoder = data_lib.make_label_encoder(data_files.load_labels(cfg.data_dir))
    ds = data_lib.make_dataset(
        schema.split_pattern(cfg.data_dir, "test"),
        vectorizer,
        encoder,
        batch_size=256,
        with_metadata=True,
    )
    trainer_ids = {}
    for ids, _, meta in ds:
        for doc_id, row in zip(meta["id"].numpy(), ids.numpy()):
            trainer_ids[doc_id.decode()] = row
    raw = {r["id"]: r["text"] for r in reuters_records() if r["split"] == "test"}
    assert len(raw) == 3019 and set(trainer_ids) == set(raw)

    exported = tf.saved_model.load(cfg.export_dir).signatures["tokenize"]
    doc_ids = sorted(raw)
    mismatched = []
    for start in range(0, len(doc_ids), 512):
        chunk = doc_ids[start : start + 512]
        served = exported(text=tf.constant([raw[i] for i in chunk]))["token_ids"].numpy()
        for doc_id, row in zip(chunk, served):
            if not np.array_equal(row, trainer_ids[doc_id]):
                mismatched.append(doc_id)
    assert mismatched == []
    # The comparison is not vacuous: documents have real, in-vocabulary tokens.
    lengths = [int((row > 0).sum()) for row in trainer_ids.values()]
    assert min(lengths) > 0 and np.mean(lengths) > 40
    assert (
        np.mean([(row > 1).sum() / max((row > 0).sum(), 1) for row in trainer_ids.values()]) > 0.9
    )


def test_mirrored_strategy_on_two_logical_cpus_trains_and_exports(tmp_path, reuters_slice):
    config = small_config(
        tmp_path, reuters_slice, training={"logical_cpu_devices": 2, "batch_size": 32}
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run(
        [sys.executable, "-m", "doctags", "run", "--config", config],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    cfg = load_config(config)
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    assert summary["replicas"] == 2
    assert os.path.exists(os.path.join(cfg.export_dir, "saved_model.pb"))
    assert "test micro-F1" in done.stdout
