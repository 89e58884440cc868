"""Training under MirroredStrategy, then the validation threshold sweep."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from doctags_core import schema
from doctags_core.config import Config, config_to_yaml, save_config
from doctags_core.metrics import summary_metrics, sweep_threshold, threshold_grid
from trainer import data as data_lib
from trainer.distribute import configure_logical_cpus, make_strategy
from trainer.models import build_model

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
THRESHOLDS_FILE = "thresholds.json"
SUMMARY_FILE = "training_summary.json"


@dataclass(frozen=True)
class TrainResult:
    """What `train` produced."""

    model_path: str
    threshold: float
    validation_metrics: dict
    epochs_run: int
    seconds: float


def _monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def _compile(model: keras.Model, cfg: Config, num_labels: int) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.training.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        # Micro-averaged (labels flattened): macro AUCs are dominated by labels
        # with no positive in a small validation split and barely move.
        metrics=[
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.AUC(curve="ROC", name="roc_auc"),
        ],
    )


def _backup_dir(cfg: Config) -> str:
    """The per-epoch backup directory, emptied if it belongs to another config.

    BackupAndRestore resumes whatever backup it finds; resuming a killed run
    is right, silently resuming a run of a *different* config is not. The
    config that owns the backup is stamped next to it and compared.
    """
    backup_dir = os.path.join(cfg.model_dir, "backup")
    stamp = os.path.join(cfg.model_dir, "backup_config.yaml")
    current = config_to_yaml(cfg)
    previous = None
    if tf.io.gfile.exists(stamp):
        with tf.io.gfile.GFile(stamp) as f:
            previous = f.read()
    if tf.io.gfile.exists(backup_dir) and previous != current:
        log.warning("discarding %s: it belongs to a run with another config", backup_dir)
        tf.io.gfile.rmtree(backup_dir)
    with tf.io.gfile.GFile(stamp, "w") as f:
        f.write(current)
    return backup_dir


def _callbacks(cfg: Config) -> list:
    t = cfg.training
    mode = _monitor_mode(t.monitor)
    return [
        keras.callbacks.EarlyStopping(
            monitor=t.monitor,
            mode=mode,
            patience=t.early_stopping_patience,
            restore_best_weights=True,
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(cfg.model_dir, "checkpoints", "best.weights.h5"),
            monitor=t.monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.BackupAndRestore(_backup_dir(cfg)),
        keras.callbacks.TensorBoard(os.path.join(cfg.model_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(cfg.model_dir, "history.csv")),
    ]


def predict_split(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, scores)`` over a whole ``(ids, labels)`` dataset."""
    ys, scores = [], []
    for ids, y in dataset:
        ys.append(y.numpy())
        scores.append(model(ids, training=False).numpy())
    return np.concatenate(ys).astype(np.int8), np.concatenate(scores)


def train(cfg: Config) -> TrainResult:
    """Trains the configured model and picks the threshold on validation.

    Writes into ``cfg.model_dir``: the Keras model, best-weights checkpoint,
    backups (resume after a crash, per epoch), TensorBoard logs, the history,
    the threshold sweep and the resolved config.
    """
    configure_logical_cpus(cfg.training.logical_cpu_devices)
    keras.utils.set_random_seed(cfg.training.seed)
    started = time.time()
    vocabulary = data_lib.load_vocabulary(cfg.data_dir)
    labels = data_lib.load_labels(cfg.data_dir)
    if not labels:
        raise ValueError(f"{cfg.data_dir}: the label vocabulary is empty")
    vectorizer = data_lib.make_vectorizer(vocabulary, cfg.model.sequence_length)
    label_encoder = data_lib.make_label_encoder(labels)

    def dataset(split: str, shuffle: bool) -> tf.data.Dataset:
        return data_lib.make_dataset(
            schema.split_pattern(cfg.data_dir, split),
            vectorizer,
            label_encoder,
            cfg.training.batch_size,
            shuffle=shuffle,
            shuffle_buffer=cfg.training.shuffle_buffer,
            seed=cfg.training.seed,
        )

    train_ds, val_ds = dataset("train", True), dataset("validation", False)
    strategy = make_strategy(cfg.training)
    log.info("training on %d replica(s)", strategy.num_replicas_in_sync)
    tf.io.gfile.makedirs(cfg.model_dir)
    with strategy.scope():
        priors = data_lib.load_label_priors(cfg.data_dir, labels)
        model = build_model(cfg.model, vectorizer.vocabulary_size(), len(labels), priors)
        _compile(model, cfg, len(labels))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.training.epochs,
        callbacks=_callbacks(cfg),
        verbose=2,
    )
    model_path = os.path.join(cfg.model_dir, MODEL_FILE)
    model.save(model_path)

    y_val, s_val = predict_split(model, val_ds)
    th = cfg.threshold
    best, curve = sweep_threshold(
        y_val, s_val, threshold_grid(th.start, th.stop, th.step), th.metric
    )
    val_metrics = summary_metrics(y_val, (s_val >= best).astype(np.int8))
    seconds = time.time() - started
    with tf.io.gfile.GFile(os.path.join(cfg.model_dir, THRESHOLDS_FILE), "w") as f:
        json.dump(
            {"threshold": best, "metric": th.metric, "split": "validation", "curve": curve},
            f,
            indent=2,
        )
    epochs_run = len(history.history.get("loss", []))
    with tf.io.gfile.GFile(os.path.join(cfg.model_dir, SUMMARY_FILE), "w") as f:
        json.dump(
            {
                "epochs_run": epochs_run,
                "seconds": seconds,
                "replicas": strategy.num_replicas_in_sync,
                "threshold": best,
                "validation": val_metrics,
                "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            },
            f,
            indent=2,
        )
    save_config(cfg, cfg.model_dir)
    log.info(
        "validation threshold %.2f: micro-F1 %.4f macro-F1 %.4f",
        best,
        val_metrics["micro_f1"],
        val_metrics["macro_f1"],
    )
    return TrainResult(model_path, best, val_metrics, epochs_run, seconds)
