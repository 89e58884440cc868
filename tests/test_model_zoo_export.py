"""Each model family and option trains, exports and serves raw strings end to end."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from doctags.cli import main
from doctags_core.config import load_config
from doctags_core.tagger import Tagger
from serving.loader_check import check_export
from tests.conftest import small_config

TEXTS = ["Net profit rose to 5 mln dlrs on higher sales", "Crude oil prices fell sharply", ""]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, reuters_slice):
    """The slice preprocessed once; every variant trains on the same data."""
    tmp = tmp_path_factory.mktemp("zoo")
    config = small_config(tmp, reuters_slice)
    assert main(["preprocess", "--config", config]) == 0
    return tmp, reuters_slice, load_config(config).data_dir


def _train_export(preprocessed, name, **sections):
    tmp, corpus, data_dir = preprocessed
    out = tmp / name
    (out / "run").mkdir(parents=True)
    os.symlink(data_dir, out / "run" / "data")  # small_config's output_dir is out/run
    config = small_config(out, corpus, **sections)
    for command in (["train"], ["export"]):
        assert main([*command, "--config", config]) == 0, (name, command)
    cfg = load_config(config)
    # Every export runs in TF Serving's session-based loader, warmup replayed,
    # with the same scores (1e-6) and tags as tf.saved_model.load.
    result = check_export(cfg.export_dir)
    assert result["warmup_replayed"] == 3 and result["max_abs_diff"] <= 1e-6
    assert result["signatures"] == ["serving_default", "tokenize"]
    return cfg


@pytest.mark.parametrize(
    "family,extra",
    [
        ("bigru", {"rnn_units": 4}),
        (
            "transformer",
            {"transformer_layers": 1, "transformer_heads": 2, "transformer_ff_dim": 16},
        ),
        ("tfidf_mlp", {}),
        ("cnn", {"conv_filters": 4, "kernel_sizes": [2, 3]}),
    ],
)
def test_family_serves_raw_strings(preprocessed, family, extra):
    cfg = _train_export(preprocessed, family, model={"family": family, **extra})
    tagger = Tagger(cfg.export_dir)
    out = tagger.raw(TEXTS)
    assert out["scores"].shape == (3, len(tagger.labels))
    assert np.isfinite(out["scores"]).all()
    # the export's scores are the trained Keras model's on the same ids
    assert tagger.predict(TEXTS[:1])[0] == sorted(tagger.predict(TEXTS[:1])[0], key=lambda t: -t[1])


def test_wordpiece_exports_and_matches_training_ids(preprocessed, tf_serving_python):
    from doctags_core.export_contract import tf_serving_minor
    from serving.tf_serving_env import run_loader_check

    cfg = _train_export(
        preprocessed, "wordpiece", model={"tokenizer": "wordpiece", "wordpiece_vocab_size": 500}
    )
    # TF Serving's own TensorFlow and tensorflow-text run the WordPiece graph too.
    done = run_loader_check(tf_serving_python, [cfg.export_dir])
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert f"TF {tf_serving_minor()}." in done.stdout
    pieces = open(os.path.join(cfg.export_dir, "assets", "wordpiece_vocab.txt")).read().split()
    assert any(p.startswith("##") for p in pieces)
    ids = Tagger(cfg.export_dir).tokenize(["unbelievably profitable exporters"])["token_ids"]
    from trainer.data import make_model_vectorizer

    expected = make_model_vectorizer(cfg)(tf.constant(["unbelievably profitable exporters"]))
    np.testing.assert_array_equal(ids, expected.numpy())
    assert (ids[0] > 0).sum() > 3  # split into several pieces


def test_per_label_thresholds_and_top1_live_in_the_export(preprocessed):
    cfg = _train_export(
        preprocessed,
        "thresholds",
        threshold={"per_label": True, "min_positives": 2, "always_top1": True},
        loss={"name": "weighted_bce"},
    )
    saved = json.load(open(os.path.join(cfg.model_dir, "thresholds.json")))
    assert saved["split"] == "validation" and "per_label" in saved
    per_label = saved["per_label"]
    assert any(t != saved["threshold"] for t in per_label.values())
    out = Tagger(cfg.export_dir).raw(TEXTS)
    tags = [[t for t in row if t] for row in out["tags"]]
    assert all(len(row) >= 1 for row in tags)  # always_top1, even for the empty text
    labels = Tagger(cfg.export_dir).labels
    for row_tags, row_scores in zip(tags[:2], out["scores"][:2]):
        for tag in row_tags[1:]:  # beyond the forced first tag, each passed its own threshold
            i = labels.index(tag.decode())
            assert row_scores[i] >= per_label.get(tag.decode(), saved["threshold"]) - 1e-6


def test_balanced_sample_weights_train_only_and_export(preprocessed):
    import keras

    from doctags_core import data_files, schema
    from trainer import data as data_lib

    cfg = _train_export(preprocessed, "balanced", loss={"sample_weights": "balanced"})
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    weights = summary["sample_weights"]
    _, n_train = data_files.load_label_counts(cfg.data_dir, data_files.load_labels(cfg.data_dir))
    assert weights["train_examples"] == n_train
    assert weights["mean"] == pytest.approx(1.0, rel=1e-5)
    assert weights["min"] < 1 < weights["max"]  # rare-label documents weigh more
    # The same run unweighted reports another training loss: the loop applies the weights.
    tmp, corpus, data_dir = preprocessed
    (tmp / "unweighted" / "run").mkdir(parents=True)
    os.symlink(data_dir, tmp / "unweighted" / "run" / "data")
    assert main(["train", "--config", small_config(tmp / "unweighted", corpus)]) == 0
    plain = json.load(open(tmp / "unweighted" / "run" / "model" / "training_summary.json"))
    assert abs(summary["history"]["loss"][0] - plain["history"]["loss"][0]) > 1e-4
    # Validation loss is unweighted: the plain mean BCE of the saved (best = only) epoch.
    labels = data_files.load_labels(cfg.data_dir)
    model = keras.models.load_model(os.path.join(cfg.model_dir, "model.keras"))
    val = data_lib.make_dataset(
        schema.split_pattern(cfg.data_dir, "validation"),
        data_lib.make_model_vectorizer(cfg),
        data_lib.make_label_encoder(labels),
        256,
    )
    bce = np.concatenate(
        [keras.losses.binary_crossentropy(y, model(ids, training=False)).numpy() for ids, y in val]
    )
    assert summary["history"]["val_loss"][0] == pytest.approx(bce.mean(), rel=1e-4)
    out = Tagger(cfg.export_dir).raw(TEXTS)  # the export serves as any other
    assert np.isfinite(out["scores"]).all()


def test_export_in_a_fresh_process_loads_custom_layers(preprocessed):
    """`doctags train` then `doctags export` as two commands: nothing imported the layers."""
    import subprocess
    import sys

    from tests.conftest import REPO

    tmp, corpus, data_dir = preprocessed
    out = tmp / "fresh"
    (out / "run").mkdir(parents=True)
    os.symlink(data_dir, out / "run" / "data")
    config = small_config(out, corpus, model={"family": "bigru", "rnn_units": 4})
    assert main(["train", "--config", config]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "doctags", "export", "--config", config],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert check_export(load_config(config).export_dir)["max_abs_diff"] <= 1e-6
