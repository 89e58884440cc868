"""`model.fit_sequence_length`: the train split's lengths (Beam) set what the models read."""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from doctags.cli import main
from doctags_core import schema
from doctags_core.config import load_config
from tests.conftest import reuters_records, small_config, write_jsonl
from trainer.sequence_length import fit_sequence_length, fitted_length


@pytest.mark.parametrize(
    ("configured", "p99", "expected"),
    [
        (256, 139, 144),  # rounded up to a multiple of 8
        (256, 73, 80),
        (256, 409, 256),  # never longer than configured
        (256, 256, 256),
        (256, 3, 16),  # never below the floor
        (12, 3, 12),  # nor above a configured length under the floor
    ],
)
def test_fitted_length_covers_the_percentile(configured, p99, expected):
    assert fitted_length(configured, {"documents": 100, "p99": p99}) == expected


def test_no_train_lengths_keeps_the_configured_length():
    """Data made before the Beam job recorded the lengths, or with no train documents."""
    assert fitted_length(256, {}) == 256
    assert fitted_length(256, {"documents": 0}) == 256


def _config_over(tmp_path, p99: int, **model):
    config = small_config(tmp_path, "unused.jsonl", model={"sequence_length": 64, **model})
    cfg = load_config(config, check_inputs=False)
    os.makedirs(cfg.data_dir)
    with open(os.path.join(cfg.data_dir, schema.METADATA_FILE), "w") as f:
        json.dump({"train_token_lengths": {"documents": 10, "p99": p99}}, f)
    return cfg


def test_fit_reads_the_data_folder_and_is_idempotent(tmp_path):
    cfg = _config_over(tmp_path, p99=21)
    fitted = fit_sequence_length(cfg)
    assert fitted.model.sequence_length == 24
    assert fit_sequence_length(fitted) == fitted
    assert dataclasses.replace(fitted.model, sequence_length=64) == cfg.model


@pytest.mark.parametrize("model", [{"fit_sequence_length": False}, {"tokenizer": "wordpiece"}])
def test_fit_is_off_when_switched_off_or_for_wordpiece(tmp_path, model):
    cfg = _config_over(tmp_path, p99=21, **model)
    assert fit_sequence_length(cfg) == cfg


def _short_reuters(path: str) -> str:
    """Real Reuters documents cut to their first 3-30 words: a short-text corpus."""
    records = []
    for i, rec in enumerate(reuters_records(240, 80)):
        words = rec["text"].split()
        records.append({**rec, "text": " ".join(words[: 3 + i % 28])})
    return write_jsonl(path, records, compress=True)


def _train_lengths_from_records(data_dir: str) -> list[int]:
    """Words per train document, counted again from the TFRecords the trainer reads."""
    files = sorted(glob.glob(schema.split_pattern(data_dir, "train")))
    spec = {schema.CLEAN_TEXT: tf.io.FixedLenFeature([], tf.string)}
    lengths = []
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        text = tf.io.parse_single_example(raw, spec)[schema.CLEAN_TEXT].numpy().decode()
        lengths.append(len(text.split()))
    return lengths


@pytest.fixture(scope="module")
def short_text_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("short")
    config = small_config(
        tmp,
        _short_reuters(str(tmp / "short.jsonl.gz")),
        model={"family": "cnn", "sequence_length": 64, "embedding_dim": 8, "conv_filters": 8},
    )
    for command in (["preprocess"], ["train"], ["export"]):
        assert main([*command, "--config", config]) == 0
    return load_config(config)


def test_beam_records_the_train_split_lengths(short_text_run):
    cfg = short_text_run
    with open(os.path.join(cfg.data_dir, schema.METADATA_FILE)) as f:
        metadata = json.load(f)
    lengths = np.array(_train_lengths_from_records(cfg.data_dir))
    summary = metadata["train_token_lengths"]
    assert summary["documents"] == len(lengths) == metadata["documents"]["train"]
    assert summary["max"] == lengths.max() and summary["mean"] == pytest.approx(lengths.mean())
    assert summary["p99"] == int(np.sort(lengths)[int(np.ceil(0.99 * len(lengths))) - 1])
    assert metadata["token_lengths"]["documents"] > summary["documents"]  # test split too


def test_training_and_export_read_the_fitted_length(short_text_run):
    cfg = short_text_run
    with open(os.path.join(cfg.data_dir, schema.METADATA_FILE)) as f:
        p99 = json.load(f)["train_token_lengths"]["p99"]
    expected = max(16, -(-p99 // 8) * 8)
    assert expected < cfg.model.sequence_length == 64  # the corpus is short: fitting applies

    with open(os.path.join(cfg.model_dir, "config.yaml")) as f:
        assert yaml.safe_load(f)["model"]["sequence_length"] == expected
    model = keras.saving.load_model(os.path.join(cfg.model_dir, "model.keras"), compile=False)
    assert model.input_shape == (None, expected)

    long_text = tf.constant([" ".join(["oil"] * 200)])
    exported = tf.saved_model.load(cfg.export_dir)
    assert exported.signatures["tokenize"](text=long_text)["token_ids"].shape == (1, expected)


def test_fitted_export_runs_in_tf_servings_session_loader(short_text_run):
    from serving.loader_check import check_export

    result = check_export(short_text_run.export_dir)
    assert result["max_abs_diff"] <= 1e-6
