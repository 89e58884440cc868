"""Training under any tf.distribute layout, then the validation threshold sweep.

`train` reads as the sequence of its steps: load the inputs the Beam job
made, lay out the batch over the cluster, build the model, run the loop,
then (chief only) choose thresholds on validation and write the outputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from doctags_core import data_files, schema
from doctags_core.atomic_files import (
    atomic_path,
    atomic_write,
    atomic_write_json,
    remove_leftovers,
)
from doctags_core.config import Config, TrainingConfig, save_config
from doctags_core.metrics import apply_thresholds, summary_metrics, thresholds_by_label
from trainer import data as data_lib
from trainer import epoch_data, tf_config
from trainer.distribute import configure_logical_cpus, make_strategy
from trainer.fused_adam import FusedAdam
from trainer.loop import LoopResult, TrainingLoop
from trainer.losses import make_loss, make_sample_weights
from trainer.models import build_model
from trainer.outputs import (
    MODEL_FILE,
    SUMMARY_FILE,
    THRESHOLDS_FILE,
    VALIDATION_SCORES_FILE,
    model_path,
)
from trainer.sequence_length import fit_sequence_length
from trainer.tf_config import ClusterRole
from trainer.thresholds import choose_thresholds, predict_split

log = logging.getLogger(__name__)


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
    stopped_by_budget: bool = False  # the time budget (not early stopping) ended it


@dataclass
class TrainingInputs:
    """What the Beam job made, ready for the loop: vocabularies, datasets, loss."""

    labels: list[str]
    vectorizer: keras.layers.Layer
    label_encoder: keras.layers.Layer
    label_counts: list[int]
    n_train: int
    loss_fn: Callable
    sample_weights: Callable | None


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch spreads over the cluster."""

    replicas: int
    global_batch: int
    learning_rate: float


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
    optimizer = FusedAdam(learning_rate)
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


def load_inputs(cfg: Config, role: ClusterRole) -> TrainingInputs:
    """Labels, vectorizer, label encoder, loss and sample weights from the Beam outputs.

    Raises:
        ValueError: when the label vocabulary is empty.
    """
    labels = data_files.load_labels(cfg.data_dir)
    if not labels:
        raise ValueError(f"{cfg.data_dir}: the label vocabulary is empty")
    pieces = None
    if cfg.model.tokenizer == "wordpiece":
        pieces = data_lib.learn_wordpiece(cfg, save=role.is_chief)
    vectorizer = data_lib.make_model_vectorizer(cfg, pieces)
    label_encoder = data_lib.make_label_encoder(labels)
    label_counts, n_train = data_files.load_label_counts(cfg.data_dir, labels)
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
    return TrainingInputs(
        labels, vectorizer, label_encoder, label_counts, n_train, loss_fn, sample_weights
    )


def batch_layout(t: TrainingConfig, strategy, role: ClusterRole) -> BatchLayout:
    """The global batch and learning rate for this cluster, logged."""
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
    return BatchLayout(replicas, global_batch, learning_rate)


def build_model_and_optimizer(
    cfg: Config, strategy, inputs: TrainingInputs, layout: BatchLayout
) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The configured family, output biases at the label priors, under the strategy."""
    with _precision(cfg.training.mixed_precision), strategy.scope():
        priors = [c / max(inputs.n_train, 1) for c in inputs.label_counts]
        model = build_model(
            cfg.model, inputs.vectorizer.vocabulary_size(), len(inputs.labels), priors
        )
        optimizer = _optimizer(cfg.training, layout.learning_rate)
    return model, optimizer


def validation_scores(
    cfg: Config, model: keras.Model, inputs: TrainingInputs
) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, scores)`` of the validation split, saved for model selection."""
    y_val, s_val = predict_split(
        model,
        data_lib.make_dataset(
            schema.split_pattern(cfg.data_dir, "validation"),
            inputs.vectorizer,
            inputs.label_encoder,
            256,
        ),
    )
    buffer = io.BytesIO()  # numpy's zip writer seeks; gfile (gs://) streams
    np.savez_compressed(buffer, y=y_val, scores=s_val)
    atomic_write(model_path(cfg.model_dir, VALIDATION_SCORES_FILE), buffer.getvalue())
    return y_val, s_val


def validation_thresholds(cfg: Config, y_val, s_val, labels: list[str]) -> tuple[float, dict, dict]:
    """``(global threshold, thresholds.json content, validation metrics)``."""
    best, thresholds = choose_thresholds(cfg, y_val, s_val, labels)
    per_label = thresholds_by_label(thresholds, labels)
    metrics = summary_metrics(y_val, apply_thresholds(s_val, per_label, cfg.threshold.always_top1))
    return best, thresholds, metrics


def _summary(
    cfg: Config,
    done: LoopResult,
    layout: BatchLayout,
    role: ClusterRole,
    optimizer,
    inputs: TrainingInputs,
    seconds: float,
    best: float,
    val_metrics: dict,
) -> dict:
    """``training_summary.json``: how the run went and what it chose."""
    t = cfg.training
    weights = inputs.sample_weights
    return {
        "epochs_run": done.epochs_run,
        "best_epoch": done.best_epoch,
        "stopped_early": done.stopped_early,
        "stopped_by_budget": done.stopped_by_budget,
        "seconds": seconds,
        "replicas": layout.replicas,
        "workers": role.num_workers,
        "global_batch_size": layout.global_batch,
        "learning_rate": layout.learning_rate,
        "mixed_precision": t.mixed_precision,
        "jit_compile": t.jit_compile,
        "loss_scale": _loss_scale(optimizer),
        "sample_weights": weights.summary() if weights else None,
        "resumed_from": done.resumed_from,
        "steps_this_process": done.steps_run,
        "input_shards": done.input_shards,
        "epoch_seconds_this_process": done.epoch_seconds,
        "threshold": best,
        "validation": val_metrics,
        "history": {k: [row[k] for row in done.history] for k in done.history[0]},
    }


def write_outputs(cfg: Config, model: keras.Model, thresholds: dict, summary: dict) -> str:
    """The Keras model, ``thresholds.json``, the summary and the config; the model's path.

    Each file is written under a temporary name and renamed into place
    (`doctags_core.atomic_files`): a run killed while saving leaves whole
    files, never a truncated ``model.keras`` that export would fail to read.
    The old ``thresholds.json`` is removed first and the new one written
    after the model, so a run killed in between leaves no thresholds, and
    export refuses, rather than pairing the new model with the thresholds
    of the previous run. Temporary files of a run killed while saving are
    removed first.
    """
    tf.io.gfile.makedirs(cfg.model_dir)
    remove_leftovers(cfg.model_dir)
    path = model_path(cfg.model_dir, MODEL_FILE)
    thresholds_path = model_path(cfg.model_dir, THRESHOLDS_FILE)
    if tf.io.gfile.exists(thresholds_path):
        tf.io.gfile.remove(thresholds_path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    atomic_write_json(thresholds_path, thresholds)
    atomic_write_json(model_path(cfg.model_dir, SUMMARY_FILE), summary)
    save_config(cfg, cfg.model_dir)
    return path


def start_strategy(cfg: Config) -> tf.distribute.Strategy:
    """The process's strategy: its first TensorFlow work.

    A multi-worker strategy must be created before any op runs, and logical
    CPU devices must be set before TensorFlow initialises its devices.
    """
    configure_logical_cpus(cfg.training.logical_cpu_devices)
    return make_strategy(cfg.training)


def train(cfg: Config, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Trains the configured family, or with ``model.family: auto`` selects one.

    Auto selection (`trainer.selection`) trains candidates with `train_one`
    and chooses among them and their ensemble on the validation split.

    Raises:
        doctags_core.data_files.DataError: the data folder is not one
            complete preprocess run (`data_files.check_dataset`).
    """
    # Refuse a data folder that mixes preprocess runs (file reads, no TF op yet);
    # training reads the train and validation splits only.
    data_files.check_dataset(cfg.data_dir, splits=("train", "validation"))
    cfg = fit_sequence_length(cfg)
    if cfg.model.family == "auto":
        from trainer.selection import train_auto

        return train_auto(cfg, on_step)
    return train_one(cfg, on_step)


def train_one(
    cfg: Config,
    on_step: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainResult:
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
        deadline: ``time.monotonic()`` at which training stops after the
            current epoch (auto selection's budget); None: no limit.
        strategy: The process's strategy when it trains several models (a
            multi-worker strategy can only be created once); by default one
            is made here.
    """
    role = tf_config.current()
    if strategy is None:
        strategy = start_strategy(cfg)
    keras.utils.set_random_seed(cfg.training.seed)
    started = time.time()
    inputs = load_inputs(cfg, role)
    layout = batch_layout(cfg.training, strategy, role)
    examples = epoch_data.TrainSplit.from_pattern(
        [schema.split_pattern(cfg.data_dir, split) for split in cfg.training.train_splits],
        inputs.vectorizer,
        inputs.label_encoder,
    )
    validation = epoch_data.eval_batches(
        schema.split_pattern(cfg.data_dir, "validation"),
        inputs.vectorizer,
        inputs.label_encoder,
        layout.global_batch,
    )
    if role.is_chief:
        tf.io.gfile.makedirs(cfg.model_dir)
    model, optimizer = build_model_and_optimizer(cfg, strategy, inputs, layout)
    loop = TrainingLoop(
        cfg,
        strategy,
        role,
        model,
        optimizer,
        examples,
        validation,
        layout.global_batch,
        on_step,
        loss_fn=inputs.loss_fn,
        sample_weights=inputs.sample_weights,
        deadline=deadline,
    )
    done = loop.run()
    if not role.is_chief:
        log.info("worker %d finished; the chief writes the outputs", role.task_index)
        seconds = time.time() - started
        return TrainResult(
            "", float("nan"), {}, done.epochs_run, seconds, model, False, done.stopped_by_budget
        )
    y_val, s_val = validation_scores(cfg, model, inputs)
    best, thresholds, val_metrics = validation_thresholds(cfg, y_val, s_val, inputs.labels)
    seconds = time.time() - started
    summary = _summary(cfg, done, layout, role, optimizer, inputs, seconds, best, val_metrics)
    path = write_outputs(cfg, model, thresholds, summary)
    loop.backup.remove()
    log.info(
        "validation threshold %.2f: micro-F1 %.4f macro-F1 %.4f",
        best,
        val_metrics["micro_f1"],
        val_metrics["macro_f1"],
    )
    return TrainResult(
        path, best, val_metrics, done.epochs_run, seconds, model, True, done.stopped_by_budget
    )
