"""Training under any tf.distribute layout, then the validation threshold sweep."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from doctags_core import schema
from doctags_core.config import Config, TrainingConfig, save_config
from doctags_core.labels import LABEL_DTYPE
from doctags_core.metrics import (
    apply_thresholds,
    per_label_thresholds,
    summary_metrics,
    sweep_threshold,
    threshold_grid,
    thresholds_by_label,
)
from trainer import data as data_lib
from trainer import epoch_data, tf_config
from trainer.distribute import configure_logical_cpus, make_strategy
from trainer.loop import TrainingLoop
from trainer.losses import make_loss, make_sample_weights
from trainer.models import build_model

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
THRESHOLDS_FILE = schema.THRESHOLDS_FILE
SUMMARY_FILE = "training_summary.json"


@dataclass(frozen=True)
class TrainResult:
    """What `train` produced."""

    model_path: str
    threshold: float
    validation_metrics: dict
    epochs_run: int
    seconds: float
    model: keras.Model | None = field(default=None, repr=False, compare=False)
    chief: bool = True  # False on the other workers of a multi-worker run (nothing written)


def global_batch_size(t: TrainingConfig, replicas: int) -> int:
    """Examples per step over all replicas and workers."""
    return t.per_replica_batch_size * replicas if t.per_replica_batch_size else t.batch_size


def scaled_learning_rate(t: TrainingConfig, global_batch: int) -> float:
    """``learning_rate``, times global batch / ``batch_size`` under linear scaling.

    The rule (Goyal et al., 2017): with k times the examples per step, take
    k times the step size, so an epoch moves the weights about as far.
    """
    if t.learning_rate_scaling == "linear":
        return t.learning_rate * global_batch / t.batch_size
    return t.learning_rate


def _optimizer(t: TrainingConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.Adam(learning_rate)
    if t.mixed_precision == "mixed_float16":
        # Dynamic loss scaling keeps small float16 gradients from flushing to zero.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@contextlib.contextmanager
def _precision(policy: str):
    """Sets the Keras dtype policy for building the model, then restores it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _loss_scale(optimizer) -> float | None:
    """The final dynamic loss scale under mixed_float16 (None otherwise)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
    return None


def predict_split(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, scores)`` over a whole ``(ids, labels)`` dataset."""
    ys, scores = [], []
    for ids, y in dataset:
        ys.append(y.numpy())
        scores.append(model(ids, training=False).numpy())
    return np.concatenate(ys).astype(LABEL_DTYPE), np.concatenate(scores)


def choose_thresholds(cfg: Config, y_val, s_val, labels: list[str]) -> tuple[float, dict]:
    """Global (and optionally per-label) thresholds, from VALIDATION scores only.

    Returns:
        The global threshold and the ``thresholds.json`` content: the global
        value, its sweep curve and, with ``threshold.per_label``, a
        ``per_label`` map (labels too rare to tune keep the global value).
    """
    th = cfg.threshold
    grid = threshold_grid(th.start, th.stop, th.step)
    best, curve = sweep_threshold(y_val, s_val, grid, th.metric)
    saved = {
        "threshold": best,
        "metric": th.metric,
        "split": "validation",
        "curve": curve,
        "always_top1": th.always_top1,
    }
    if th.per_label:
        tuned = per_label_thresholds(y_val, s_val, grid, best, th.min_positives)
        saved["per_label"] = dict(zip(labels, tuned))
        saved["min_positives"] = th.min_positives
    return best, saved


def train(cfg: Config, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Trains the configured model and picks the threshold on validation.

    Runs the same custom loop (`trainer.loop`) on one device, on several
    (MirroredStrategy) or on several workers (MultiWorkerMirroredStrategy
    from TF_CONFIG). Only the chief writes into ``cfg.model_dir``: the Keras
    model, TensorBoard logs, the history, the threshold sweep, the summary
    and the resolved config; every worker takes part in the checkpoints
    (``backup/``), which let a killed run resume where it was.

    Args:
        cfg: The experiment config.
        on_step: Optional ``f(epoch, step)`` called after every training step.
    """
    configure_logical_cpus(cfg.training.logical_cpu_devices)
    role = tf_config.current()
    # First TensorFlow work of the process: a multi-worker strategy must be
    # created before any op runs.
    strategy = make_strategy(cfg.training)
    keras.utils.set_random_seed(cfg.training.seed)
    started = time.time()
    labels = data_lib.load_labels(cfg.data_dir)
    if not labels:
        raise ValueError(f"{cfg.data_dir}: the label vocabulary is empty")
    pieces = None
    if cfg.model.tokenizer == "wordpiece":
        pieces = data_lib.learn_wordpiece(cfg, save=role.is_chief)
    vectorizer = data_lib.make_model_vectorizer(cfg, pieces)
    label_encoder = data_lib.make_label_encoder(labels)
    label_counts, n_train = data_lib.load_label_counts(cfg.data_dir, labels)
    loss_fn = make_loss(cfg.loss, label_counts, n_train, reduction=None)
    train_pattern = schema.split_pattern(cfg.data_dir, "train")
    # Every worker makes the same pass over the train labels: the same scale.
    sample_weights = make_sample_weights(
        cfg.loss,
        label_counts,
        n_train,
        lambda: data_lib.label_batches(train_pattern, label_encoder),
    )
    if sample_weights is not None:
        log.info("sample weights: %s", sample_weights.summary())
    t = cfg.training
    replicas = strategy.num_replicas_in_sync
    global_batch = global_batch_size(t, replicas)
    learning_rate = scaled_learning_rate(t, global_batch)
    log.info(
        "training on %d replica(s) (%d worker(s), this one %s:%d%s): global batch %d, lr %g",
        replicas,
        role.num_workers,
        role.task_type,
        role.task_index,
        ", chief" if role.is_chief else "",
        global_batch,
        learning_rate,
    )
    if global_batch < replicas:
        log.warning("global batch %d < %d replicas: some replicas idle", global_batch, replicas)
    examples = epoch_data.parsed_examples(train_pattern, vectorizer, label_encoder)
    validation = epoch_data.eval_batches(
        schema.split_pattern(cfg.data_dir, "validation"), vectorizer, label_encoder, global_batch
    )
    if role.is_chief:
        tf.io.gfile.makedirs(cfg.model_dir)
    with _precision(t.mixed_precision), strategy.scope():
        priors = [c / max(n_train, 1) for c in label_counts]
        model = build_model(cfg.model, vectorizer.vocabulary_size(), len(labels), priors)
        optimizer = _optimizer(t, learning_rate)
    loop = TrainingLoop(
        cfg,
        strategy,
        role,
        model,
        optimizer,
        examples,
        validation,
        global_batch,
        on_step,
        loss_fn=loss_fn,
        sample_weights=sample_weights,
    )
    done = loop.run()
    if not role.is_chief:
        log.info("worker %d finished; the chief writes the outputs", role.task_index)
        seconds = time.time() - started
        return TrainResult("", float("nan"), {}, done.epochs_run, seconds, model, chief=False)

    model_path = os.path.join(cfg.model_dir, MODEL_FILE)
    model.save(model_path)
    y_val, s_val = predict_split(
        model,
        data_lib.make_dataset(
            schema.split_pattern(cfg.data_dir, "validation"), vectorizer, label_encoder, 256
        ),
    )
    best, thresholds = choose_thresholds(cfg, y_val, s_val, labels)
    per_label = thresholds_by_label(thresholds, labels)
    val_metrics = summary_metrics(
        y_val, apply_thresholds(s_val, per_label, cfg.threshold.always_top1)
    )
    seconds = time.time() - started
    with tf.io.gfile.GFile(os.path.join(cfg.model_dir, THRESHOLDS_FILE), "w") as f:
        json.dump(thresholds, f, indent=2)
    with tf.io.gfile.GFile(os.path.join(cfg.model_dir, SUMMARY_FILE), "w") as f:
        json.dump(
            {
                "epochs_run": done.epochs_run,
                "best_epoch": done.best_epoch,
                "stopped_early": done.stopped_early,
                "seconds": seconds,
                "replicas": replicas,
                "workers": role.num_workers,
                "global_batch_size": global_batch,
                "learning_rate": learning_rate,
                "mixed_precision": t.mixed_precision,
                "jit_compile": t.jit_compile,
                "loss_scale": _loss_scale(optimizer),
                "sample_weights": sample_weights.summary() if sample_weights else None,
                "resumed_from": done.resumed_from,
                "steps_this_process": done.steps_run,
                "epoch_seconds_this_process": done.epoch_seconds,
                "threshold": best,
                "validation": val_metrics,
                "history": {k: [row[k] for row in done.history] for k in done.history[0]},
            },
            f,
            indent=2,
        )
    save_config(cfg, cfg.model_dir)
    loop.backup.remove()
    log.info(
        "validation threshold %.2f: micro-F1 %.4f macro-F1 %.4f",
        best,
        val_metrics["micro_f1"],
        val_metrics["macro_f1"],
    )
    return TrainResult(model_path, best, val_metrics, done.epochs_run, seconds, model)
