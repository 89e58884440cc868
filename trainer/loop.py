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

Each call into the compiled steps runs up to ``steps_per_call`` steps
(`steps_in_call`); a call never crosses a checkpoint boundary or the end of
the epoch, so checkpoints land on the same steps whatever the call size and
a resumed run starts at the step it saved.
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
from doctags_core.iterator_release import release_in_background
from trainer import epoch_data
from trainer.checkpoint import Backup, TrainState
from trainer.distribute import replica_sum
from trainer.early_stopping import EarlyStopping
from trainer.reporting import Reporter
from trainer.sharding import check_layout
from trainer.steps import DistributedSteps
from trainer.tf_config import ClusterRole

log = logging.getLogger(__name__)


def steps_in_call(
    step: int, steps: int, per_call: int, checkpoint_every: int, short_last: bool = False
) -> int:
    """Steps of the next call: up to ``per_call``, never past a checkpoint or the epoch end.

    A short last step runs in a call of its own. Under
    MultiWorkerMirroredStrategy an embedding's sparse gradient is
    all-gathered, and a call whose steps changed shape (full batches, then
    the short one) aborted with "Shape mismatch in the collective instance"
    ([768,16] against [2048,16], 2 workers): one worker's gather of the last
    step met the other's of a full one, whatever the file layout. Calls run
    one after the other, so steps of one shape per call never meet another.

    Args:
        step: Steps done in this epoch.
        steps: Steps in the epoch.
        per_call: ``training.steps_per_call``.
        checkpoint_every: ``training.checkpoint_every_steps`` (0: epoch ends only).
        short_last: The epoch's last global batch is short (examples not a
            multiple of the global batch).
    """
    n = min(per_call, steps - step)
    if checkpoint_every:
        n = min(n, checkpoint_every - step % checkpoint_every)
    if short_last and step < steps - 1:
        n = min(n, steps - 1 - step)
    return n


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
    input_shards: int
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
        examples: The training files (`trainer.epoch_data.TrainSplit`).
        validation: Validation batches (`trainer.epoch_data.eval_batches`).
        global_batch: Examples per step over all replicas and workers.
        on_step: Optional ``f(epoch, step)`` called after every step.
        loss_fn: ``f(y_true, scores)`` -> per-example losses (shape
            ``[batch]``, no reduction); binary cross-entropy by default.
        sample_weights: Optional ``f(y_true)`` -> per-example weights
            (`trainer.losses.BalancedSampleWeights`), applied to the
            training loss only.
        deadline: ``time.monotonic()`` by which training must end (the time
            budget of ``model.family: auto``): after an epoch, it stops with
            its best weights when another epoch as long would end past it;
            None: no limit. Every worker stops when any worker's clock says so.
    """

    def __init__(
        self,
        cfg: Config,
        strategy: tf.distribute.Strategy,
        role: ClusterRole,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        examples: epoch_data.TrainSplit,
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
        self._replicas_late = replica_sum(strategy)  # any worker late: all stop
        self.examples, self.global_batch = examples, global_batch
        self.validation = strategy.experimental_distribute_dataset(validation)
        self.on_step = on_step
        self.stopping = EarlyStopping(
            self.t.monitor, self.t.early_stopping_patience, self.t.early_stopping
        )
        self.steps = DistributedSteps(
            strategy, model, optimizer, loss_fn, sample_weights, self.t.jit_compile
        )
        self.input_shards = self.t.input_shards or role.num_workers
        check_layout(global_batch, self.input_shards, role.num_workers)
        self.state = TrainState(self.stopping.initial_best, global_batch, self.input_shards)
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
        elif self._next_epoch_misses_deadline(seconds):
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

    def _next_epoch_misses_deadline(self, epoch_seconds: float) -> bool:
        """Whether another epoch as long as the last would end past the deadline.

        Any worker's clock decides for all (an all-reduce), so every worker
        stops after the same epoch.
        """
        if self.deadline is None:
            return False
        late = tf.constant(float(time.monotonic() + epoch_seconds > self.deadline))
        if self.role.num_workers <= 1:
            return bool(late.numpy())
        return bool(self._replicas_late(late).numpy() > 0)

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
        saved = (int(self.state.global_batch.numpy()), int(self.state.input_shards.numpy()))
        if saved != (self.global_batch, self.input_shards):
            raise ValueError(
                f"{restored} counts its data position in global batches of {saved[0]} over "
                f"{saved[1]} input shard(s); this run uses {self.global_batch} over "
                f"{self.input_shards} (another replica or worker count? set "
                "training.input_shards and per_replica_batch_size to keep the layout) "
                f"or delete {self.backup.directory}"
            )
        log.info("resuming from %s: epoch %d, step %d", restored, *resumed_from)
        self.reporter.resuming(*resumed_from)
        return resumed_from

    def _epoch_iterator(self, plan, start: int):
        """An iterator over this worker's per-replica batches from step ``start``."""
        dataset = self.strategy.distribute_datasets_from_function(
            lambda context: epoch_data.worker_batches(
                self.examples, plan, context, self.t.seed, self.t.shuffle_buffer, start
            )
        )
        return iter(dataset)

    def _run_epoch(self, epoch: int, start: int) -> tuple[float, int]:
        """Trains the rest of ``epoch`` from step ``start``; ``(seconds, steps run)``."""
        if start == 0:
            self.steps.train_metrics.reset()
        plan = self.examples.plan(epoch, self.t.seed, self.input_shards, self.global_batch)
        self.reporter.steps_per_epoch = plan.steps
        iterator = self._epoch_iterator(plan, start)
        every = self.t.checkpoint_every_steps
        short_last = self.examples.examples % self.global_batch != 0
        started, step = time.time(), start
        bar = self.reporter.progress_bar(epoch, start)
        while step < plan.steps:
            n = steps_in_call(step, plan.steps, self.t.steps_per_call, every, short_last)
            self.steps.train_steps(iterator, n)
            step += n
            self.state.step.assign(step)
            if bar is not None:
                bar.update(step)
            if self.on_step is not None:
                for done in range(step - n + 1, step + 1):
                    self.on_step(epoch, done)
            if every and step % every == 0:
                self._save()
        self.reporter.finish_bar(bar)
        seconds = time.time() - started
        # Destroying a distributed iterator can block for up to a minute
        # (doctags_core.iterator_release): the next epoch must not wait for it.
        release_in_background(iterator)
        del iterator
        return seconds, step - start

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
            input_shards=self.input_shards,
            stopped_by_budget=self.stopped_by_budget,
        )
