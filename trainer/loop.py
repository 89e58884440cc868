"""One custom training loop for every tf.distribute layout.

The same code runs on one device, on N devices of a host
(MirroredStrategy) and on N hosts (MultiWorkerMirroredStrategy): Keras 3
``model.fit`` fails under the latter (keras issue 20585), a loop built on
``strategy.run`` does not.

The loop only sequences the jobs of its collaborators: the distributed
steps (`trainer.steps`), early stopping (`trainer.early_stopping`), what
the run reports (`trainer.reporting`: TensorBoard, history.csv, progress)
and the resumable checkpoint (`trainer.checkpoint`, every
``checkpoint_every_steps`` steps and at each epoch end).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from doctags_core.config import Config
from trainer import epoch_data
from trainer.checkpoint import Backup, TrainState
from trainer.early_stopping import EarlyStopping
from trainer.reporting import Reporter
from trainer.steps import DistributedSteps
from trainer.tf_config import ClusterRole

log = logging.getLogger(__name__)


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
    stopped_by_budget: bool = False


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
            ``[batch]``, no reduction); binary cross-entropy by default.
        sample_weights: Optional ``f(y_true)`` -> per-example weights
            (`trainer.losses.BalancedSampleWeights`), applied to the
            training loss only.
        deadline: ``time.monotonic()`` after which training stops at the end
            of the current epoch, keeping its best weights (the time budget
            of ``model.family: auto``); None: no limit. Every worker stops
            when any worker's clock has passed it.
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
        deadline: float | None = None,
    ):
        self.t = cfg.training
        self.deadline = deadline
        self.stopped_by_budget = False
        self.strategy, self.role, self.model = strategy, role, model
        self.examples, self.global_batch = examples, global_batch
        self.validation = strategy.experimental_distribute_dataset(validation)
        self.on_step = on_step
        self.stopping = EarlyStopping(self.t.monitor, self.t.early_stopping_patience)
        self.steps = DistributedSteps(
            strategy, model, optimizer, loss_fn, sample_weights, self.t.jit_compile
        )
        self.state = TrainState(self.stopping.initial_best, global_batch)
        self.best_weights = [
            tf.Variable(w.value, trainable=False, name="best") for w in model.weights
        ]
        self.backup = Backup(
            cfg,
            role,
            model=model.variables,  # includes the dropout seed-generator states
            optimizer=optimizer.variables,
            state=self.state,
            train_metrics=self.steps.train_metrics.variables,
            best_weights=self.best_weights,
        )
        self.reporter = Reporter(cfg.model_dir, role, self.t.epochs)
        self._optimizer = optimizer

    def _save(self) -> None:
        self.backup.save(int(self._optimizer.iterations.numpy()))

    def _history(self) -> list[dict]:
        return json.loads(self.state.history.numpy().decode())

    def _end_epoch(self, epoch: int, seconds: float, steps: int) -> dict:
        """Evaluates, applies the early-stopping rule, records and reports the epoch."""
        logs = {**self.steps.train_metrics.result(), **self.steps.evaluate(self.validation)}
        history = self._history() + [logs]
        current = logs[self.t.monitor]
        decision = self.stopping.decide(
            epoch, current, float(self.state.best.numpy()), int(self.state.wait.numpy())
        )
        if decision.improved:
            self.state.best.assign(current)
            self.state.best_epoch.assign(epoch)
            for best, w in zip(self.best_weights, self.model.weights):
                best.assign(w.value)
        if decision.stop:
            self.state.stopped.assign(True)
        elif self._past_deadline():
            log.info(
                "epoch %d: the time budget is spent; stopping with the best weights", epoch + 1
            )
            self.stopped_by_budget = True
            self.state.stopped.assign(True)
        self.state.wait.assign(decision.wait)
        self.state.history.assign(json.dumps(history))
        self.state.epoch.assign(epoch + 1)
        self.state.step.assign(0)
        self.reporter.end_epoch(epoch, logs, history, seconds, steps, decision.improved)
        return logs

    def _past_deadline(self) -> bool:
        """Whether any worker's clock has passed the deadline (agreed by an all-reduce)."""
        if self.deadline is None:
            return False
        late = tf.constant(float(time.monotonic() > self.deadline))
        if self.role.num_workers <= 1:
            return bool(late.numpy())
        return bool(self._replicas_late(late).numpy() > 0)

    @tf.function
    def _replicas_late(self, late):
        per_replica = self.strategy.run(tf.identity, args=(late,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _resume(self) -> tuple[int, int] | None:
        """Restores the latest checkpoint of this config; ``(epoch, step)`` or None.

        Raises:
            ValueError: if the checkpoint counts its data position in
                another global batch size.
        """
        restored = self.backup.restore()
        log.info("worker %d: latest checkpoint %s", self.role.task_index, restored)
        if not restored:
            return None
        resumed_from = (int(self.state.epoch.numpy()), int(self.state.step.numpy()))
        if int(self.state.global_batch.numpy()) != self.global_batch:
            raise ValueError(
                f"{restored} counts its data position in global batches of "
                f"{int(self.state.global_batch.numpy())}, this run uses {self.global_batch} "
                "(per_replica_batch_size with another replica count?); restore the layout "
                f"or delete {self.backup.directory}"
            )
        log.info("resuming from %s: epoch %d, step %d", restored, *resumed_from)
        self.reporter.resuming(*resumed_from)
        return resumed_from

    def _run_epoch(self, epoch: int, start: int) -> tuple[float, int]:
        """Trains the rest of ``epoch`` from step ``start``; ``(seconds, steps run)``."""
        if start == 0:
            self.steps.train_metrics.reset()
        batches = epoch_data.epoch_batches(
            self.examples, epoch, self.global_batch, self.t.seed, self.t.shuffle_buffer, start
        )
        every = self.t.checkpoint_every_steps
        started, ran = time.time(), 0
        bar = self.reporter.progress_bar(epoch, start)
        for batch in self.strategy.experimental_distribute_dataset(batches):
            self.steps.train_step(batch)
            step = int(self.state.step.assign_add(1).numpy())
            ran += 1
            if bar is not None:
                bar.update(step)
            if self.on_step is not None:
                self.on_step(epoch, step)
            if every and step % every == 0:
                self._save()
        self.reporter.finish_bar(bar)
        return time.time() - started, ran

    def _should_continue(self) -> bool:
        return (
            not bool(self.state.stopped.numpy()) and int(self.state.epoch.numpy()) < self.t.epochs
        )

    def run(self) -> LoopResult:
        """Trains to the end (or early stop), resuming from a checkpoint if any.

        Leaves the model holding the best weights.
        """
        resumed_from = self._resume()
        epoch_seconds, steps_run = [], 0
        while self._should_continue():
            epoch, start = int(self.state.epoch.numpy()), int(self.state.step.numpy())
            seconds, ran = self._run_epoch(epoch, start)
            steps_run += ran
            self.reporter.steps_per_epoch = int(self.state.step.numpy())
            epoch_seconds.append(seconds)
            self._end_epoch(epoch, seconds, int(self.state.step.numpy()) - start)
            self._save()
        if int(self.state.best_epoch.numpy()) >= 0:  # restore_best_weights
            for w, best in zip(self.model.weights, self.best_weights):
                w.assign(best)
        history = self._history()
        return LoopResult(
            history=history,
            epochs_run=len(history),
            best_epoch=int(self.state.best_epoch.numpy()),
            stopped_early=bool(self.state.stopped.numpy()),
            resumed_from=resumed_from,
            epoch_seconds=epoch_seconds,
            steps_run=steps_run,
            stopped_by_budget=self.stopped_by_budget,
        )
