"""One custom training loop for every tf.distribute layout.

The same code runs on one device, on N devices of a host
(MirroredStrategy) and on N hosts (MultiWorkerMirroredStrategy): Keras 3
``model.fit`` fails under the latter (keras issue 20585), a loop built on
``strategy.run`` does not.

Per step, each replica computes the binary cross-entropy of its share of
the global batch and divides the SUM by the size of the whole global batch
(all-reduced, so a short last batch is averaged correctly), so the summed
gradients equal those of one device seeing the global batch. Predictions
and labels are gathered to update micro-averaged AUC metrics identically
on every worker, which keeps early stopping in lockstep across workers.
With sample weights (``loss.sample_weights``), each training example's loss
is multiplied by its weight before that average (still divided by the
example count), and the reported training loss is the weighted one, as in
Keras; validation losses and metrics are never weighted, so early stopping
compares like with like.

What Keras callbacks did is done here: early stopping on
``training.monitor`` with the best weights restored, TensorBoard scalars,
a progress line and a history.csv row per epoch (chief only), and a
checkpoint every
``checkpoint_every_steps`` steps and at each epoch end (see
`trainer.checkpoint`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from doctags_core.config import Config
from trainer import epoch_data
from trainer.checkpoint import Backup, TrainState
from trainer.losses import training_losses
from trainer.tf_config import ClusterRole

log = logging.getLogger(__name__)

SUM = tf.distribute.ReduceOp.SUM
METRIC_NAMES = ("loss", "pr_auc", "roc_auc")
HISTORY_FILE = "history.csv"


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for AUCs."""
    return "min" if monitor.endswith("loss") else "max"


def _is_improvement(mode: str, current: float, best: float) -> bool:
    return current < best if mode == "min" else current > best


def write_history(path: str, history: list[dict]) -> None:
    """history.csv: one row per finished epoch, the columns Keras' CSVLogger wrote."""
    keys = sorted(history[0]) if history else []
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch, row in enumerate(history):
            writer.writerow([epoch, *(row[k] for k in keys)])


class _EpochMetrics:
    """Mean loss and micro-averaged PR/ROC AUC over one epoch (or one split).

    The variables live outside the strategy (plain variables updated in
    cross-replica context from gathered tensors), so every worker holds the
    same values, and they are saved with the checkpoint: a resumed epoch
    reports what an uninterrupted one would have.
    """

    def __init__(self, prefix: str):
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
        # Micro-averaged (labels flattened): macro AUCs are dominated by labels
        # with no positive in a small validation split and barely move.
        self.aucs = {
            "pr_auc": keras.metrics.AUC(curve="PR", name=f"{prefix}pr_auc"),
            "roc_auc": keras.metrics.AUC(curve="ROC", name=f"{prefix}roc_auc"),
        }

    @property
    def variables(self) -> list:
        out = [self.loss_sum, self.examples]
        for metric in self.aucs.values():
            out += [v.value for v in metric.variables]
        return out

    def update(self, loss_sum, y, p) -> None:
        self.loss_sum.assign_add(tf.cast(loss_sum, tf.float64))
        self.examples.assign_add(tf.cast(tf.shape(y)[0], tf.int64))
        for metric in self.aucs.values():
            metric.update_state(y, p)

    def reset(self) -> None:
        self.loss_sum.assign(0.0)
        self.examples.assign(0)
        for metric in self.aucs.values():
            metric.reset_state()

    def result(self) -> dict[str, float]:
        out = {"loss": float(self.loss_sum.numpy() / max(int(self.examples.numpy()), 1))}
        out.update({k: float(m.result().numpy()) for k, m in self.aucs.items()})
        return out


@dataclass
class LoopResult:
    """What the loop did (the weights are in the model)."""

    history: list[dict]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from: tuple[int, int] | None
    epoch_seconds: list[float]
    steps_run: int


class TrainingLoop:
    """Trains ``model`` under ``strategy`` with checkpoints and early stopping.

    Args:
        cfg: The run's config (training section, ``model_dir``).
        strategy: From `trainer.distribute.make_strategy`.
        role: This process's place in the cluster; only the chief writes logs.
        model: Built under ``strategy.scope()``.
        optimizer: Built under ``strategy.scope()`` (possibly a
            `keras.optimizers.LossScaleOptimizer`).
        examples: Training examples (`trainer.epoch_data.parsed_examples`).
        validation: Validation batches (`trainer.epoch_data.eval_batches`).
        global_batch: Examples per step over all replicas and workers.
        on_step: Optional ``f(epoch, step)`` called after every step.
        loss_fn: ``f(y_true, scores)`` -> per-example losses (shape
            ``[batch]``, no reduction); binary cross-entropy by default. The
            loop itself averages over the GLOBAL batch.
        sample_weights: Optional ``f(y_true)`` -> per-example weights
            (`trainer.losses.BalancedSampleWeights`), applied to the
            training loss only.
    """

    def __init__(
        self,
        cfg: Config,
        strategy: tf.distribute.Strategy,
        role: ClusterRole,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        examples: tf.data.Dataset,
        validation: tf.data.Dataset,
        global_batch: int,
        on_step: Callable[[int, int], None] | None = None,
        loss_fn: Callable = keras.losses.binary_crossentropy,
        sample_weights: Callable | None = None,
    ):
        self.cfg, self.t = cfg, cfg.training
        self.strategy, self.role = strategy, role
        self.model, self.optimizer = model, optimizer
        self.examples, self.global_batch = examples, global_batch
        self.validation = strategy.experimental_distribute_dataset(validation)
        self.on_step, self.loss_fn, self.sample_weights = on_step, loss_fn, sample_weights
        self.mode = monitor_mode(self.t.monitor)
        self.train_metrics = _EpochMetrics("")
        self.val_metrics = _EpochMetrics("val_")
        self.state = TrainState(math.inf if self.mode == "min" else -math.inf, global_batch)
        self.best_weights = [
            tf.Variable(w.value, trainable=False, name="best") for w in model.weights
        ]
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self.backup = Backup(
            cfg,
            role,
            model=model.variables,  # includes the dropout seed-generator states
            optimizer=optimizer.variables,
            state=self.state,
            train_metrics=self.train_metrics.variables,
            best_weights=self.best_weights,
        )
        self._train_step = tf.function(self._distributed_train_step)
        self._eval_step = tf.function(self._distributed_eval_step)
        compile_replica = tf.function(jit_compile=True) if self.t.jit_compile else (lambda f: f)
        self._grads = compile_replica(self._replica_gradients)
        self._scores = compile_replica(self._replica_scores)
        if role.is_chief:
            logs = os.path.join(cfg.model_dir, "logs")
            self._writers = {
                "train": tf.summary.create_file_writer(os.path.join(logs, "train")),
                "validation": tf.summary.create_file_writer(os.path.join(logs, "validation")),
            }
        else:
            self._writers = {k: tf.summary.create_noop_writer() for k in ("train", "validation")}

    # --- the distributed steps -------------------------------------------------

    def _replica_gradients(self, ids, y, global_size):
        with tf.GradientTape() as tape:
            p = tf.cast(self.model(ids, training=True), tf.float32)
            per_example = training_losses(self.loss_fn, y, p, self.sample_weights)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_size)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return grads, tf.reduce_sum(per_example), p

    def _replica_train(self, ids, y):
        ctx = tf.distribute.get_replica_context()
        # The global batch actually present: the last one may be short, and
        # a replica may even get none of it.
        global_size = ctx.all_reduce(SUM, tf.shape(y, out_type=tf.int64)[0])
        grads, loss_sum, p = self._grads(ids, y, global_size)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss_sum, y, p

    def _replica_scores(self, ids):
        return tf.cast(self.model(ids, training=False), tf.float32)

    def _replica_eval(self, ids, y):
        p = self._scores(ids)
        return tf.reduce_sum(self.loss_fn(y, p)), y, p

    def _gather_update(self, metrics: _EpochMetrics, per_replica) -> None:
        loss_sum, y, p = per_replica
        metrics.update(
            self.strategy.reduce(SUM, loss_sum, axis=None),
            self.strategy.gather(y, axis=0),
            self.strategy.gather(p, axis=0),
        )

    def _distributed_train_step(self, batch):
        ids, y = batch
        self._gather_update(self.train_metrics, self.strategy.run(self._replica_train, (ids, y)))

    def _distributed_eval_step(self, batch):
        ids, y = batch
        self._gather_update(self.val_metrics, self.strategy.run(self._replica_eval, (ids, y)))

    # --- epochs ----------------------------------------------------------------

    def _evaluate(self) -> dict[str, float]:
        self.val_metrics.reset()
        for batch in self.validation:
            self._eval_step(batch)
        return {f"val_{k}": v for k, v in self.val_metrics.result().items()}

    def _save(self) -> None:
        self.backup.save(int(self.optimizer.iterations.numpy()))

    def _end_epoch(self, epoch: int, seconds: float, steps: int) -> dict:
        logs = {**self.train_metrics.result(), **self._evaluate()}
        history = json.loads(self.state.history.numpy().decode())
        history.append(logs)
        current = logs[self.t.monitor]
        # Same rule as keras.callbacks.EarlyStopping(restore_best_weights=True).
        wait = int(self.state.wait.numpy()) + 1
        improved = _is_improvement(self.mode, current, float(self.state.best.numpy()))
        if improved:
            self.state.best.assign(current)
            self.state.best_epoch.assign(epoch)
            for best, w in zip(self.best_weights, self.model.weights):
                best.assign(w.value)
            wait = 0
        elif wait >= self.t.early_stopping_patience and epoch > 0:
            self.state.stopped.assign(True)
        self.state.wait.assign(wait)
        self.state.history.assign(json.dumps(history))
        self.state.epoch.assign(epoch + 1)
        self.state.step.assign(0)
        self._write_summaries(epoch, logs)
        if self.role.is_chief:  # rewritten whole, so a resumed run's file has no duplicates
            write_history(os.path.join(self.cfg.model_dir, HISTORY_FILE), history)
        line = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        mark = " (best)" if improved else ""
        message = (
            f"epoch {epoch + 1}/{self.t.epochs} - {steps} steps - {seconds:.1f}s - {line}{mark}"
        )
        if self.role.is_chief:
            print(message, flush=True)
        else:
            log.info("worker %d: %s", self.role.task_index, message)
        return logs

    def _write_summaries(self, epoch: int, logs: dict) -> None:
        with self._writers["train"].as_default():
            for k in METRIC_NAMES:
                tf.summary.scalar(f"epoch_{k}", logs[k], step=epoch)
        with self._writers["validation"].as_default():
            for k in METRIC_NAMES:
                tf.summary.scalar(f"epoch_{k}", logs[f"val_{k}"], step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def _progress_bar(self, epoch: int, start: int):
        """A step progress bar for a person at a terminal (chief only).

        Logs and CI (no TTY) get the one line per epoch instead: a bar
        redrawn into a log file is noise.
        """
        if not (self.role.is_chief and sys.stdout.isatty()):
            return None
        print(f"epoch {epoch + 1}/{self.t.epochs}", flush=True)
        bar = keras.utils.Progbar(getattr(self, "_steps_per_epoch", None), unit_name="step")
        if start:
            bar.update(start)
        return bar

    def run(self) -> LoopResult:
        """Trains to the end (or early stop), resuming from a checkpoint if any.

        Leaves the model holding the best weights.
        """
        restored = self.backup.restore()
        log.info("worker %d: latest checkpoint %s", self.role.task_index, restored)
        resumed_from = None
        if restored:
            resumed_from = (int(self.state.epoch.numpy()), int(self.state.step.numpy()))
            if int(self.state.global_batch.numpy()) != self.global_batch:
                raise ValueError(
                    f"{restored} counts its data position in global batches of "
                    f"{int(self.state.global_batch.numpy())}, this run uses {self.global_batch} "
                    "(per_replica_batch_size with another replica count?); restore the layout "
                    f"or delete {self.backup.directory}"
                )
            log.info("resuming from %s: epoch %d, step %d", restored, *resumed_from)
            if self.role.is_chief:
                print(
                    f"resuming at epoch {resumed_from[0] + 1}, step {resumed_from[1]}", flush=True
                )
        every = self.t.checkpoint_every_steps
        epoch_seconds, steps_run = [], 0
        while (
            not bool(self.state.stopped.numpy()) and int(self.state.epoch.numpy()) < self.t.epochs
        ):
            epoch, start = int(self.state.epoch.numpy()), int(self.state.step.numpy())
            if start == 0:
                self.train_metrics.reset()
            batches = epoch_data.epoch_batches(
                self.examples, epoch, self.global_batch, self.t.seed, self.t.shuffle_buffer, start
            )
            started = time.time()
            bar = self._progress_bar(epoch, start)
            for batch in self.strategy.experimental_distribute_dataset(batches):
                self._train_step(batch)
                step = int(self.state.step.assign_add(1).numpy())
                steps_run += 1
                if bar is not None:
                    bar.update(step)
                if self.on_step is not None:
                    self.on_step(epoch, step)
                if every and step % every == 0:
                    self._save()
            seconds = time.time() - started
            if bar is not None and bar.target is None:
                print(flush=True)  # a bar without a known end does not finish its line
            self._steps_per_epoch = int(self.state.step.numpy())
            epoch_seconds.append(seconds)
            self._end_epoch(epoch, seconds, int(self.state.step.numpy()) - start)
            self._save()
        if int(self.state.best_epoch.numpy()) >= 0:  # restore_best_weights
            for w, best in zip(self.model.weights, self.best_weights):
                w.assign(best)
        history = json.loads(self.state.history.numpy().decode())
        return LoopResult(
            history=history,
            epochs_run=len(history),
            best_epoch=int(self.state.best_epoch.numpy()),
            stopped_early=bool(self.state.stopped.numpy()),
            resumed_from=resumed_from,
            epoch_seconds=epoch_seconds,
            steps_run=steps_run,
        )
