"""The distributed train and eval steps, and the metrics they accumulate.

Per step, each replica computes the loss of its share of the global batch
and divides the SUM by the size of the whole global batch (all-reduced, so
a short last batch is averaged correctly), so the summed gradients equal
those of one device seeing the global batch. Predictions and labels are
gathered to update micro-averaged AUC metrics identically on every worker,
which keeps early stopping in lockstep across workers. With sample weights
(``loss.sample_weights``), each training example's loss is multiplied by
its weight before that average (still divided by the example count), and
the reported training loss is the weighted one, as in Keras; validation
losses and metrics are never weighted, so early stopping compares like
with like.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from trainer.losses import training_losses

SUM = tf.distribute.ReduceOp.SUM


class EpochMetrics:
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


class DistributedSteps:
    """The train step and the evaluation pass of one model under one strategy.

    Args:
        strategy: From `trainer.distribute.make_strategy`.
        model: Built under ``strategy.scope()``.
        optimizer: Built under ``strategy.scope()`` (possibly a
            `keras.optimizers.LossScaleOptimizer`).
        loss_fn: ``f(y_true, scores)`` -> per-example losses (shape
            ``[batch]``, no reduction). The steps average over the GLOBAL batch.
        sample_weights: Optional ``f(y_true)`` -> per-example weights,
            applied to the training loss only.
        jit_compile: XLA-compile the per-replica gradient and score functions.

    Attributes:
        train_metrics: The running metrics of the current training epoch.
        val_metrics: The metrics of the last evaluation.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        loss_fn: Callable = keras.losses.binary_crossentropy,
        sample_weights: Callable | None = None,
        jit_compile: bool = False,
    ):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.loss_fn, self.sample_weights = loss_fn, sample_weights
        self.train_metrics = EpochMetrics("")
        self.val_metrics = EpochMetrics("val_")
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self._train_step = tf.function(self._distributed_train_step)
        self._eval_step = tf.function(self._distributed_eval_step)
        compile_replica = tf.function(jit_compile=True) if jit_compile else (lambda f: f)
        self._grads = compile_replica(self._replica_gradients)
        self._scores = compile_replica(self._replica_scores)

    def train_step(self, batch) -> None:
        """One optimizer step on a distributed global batch; updates `train_metrics`."""
        self._train_step(batch)

    def evaluate(self, distributed_batches) -> dict[str, float]:
        """Loss and AUCs over a whole distributed dataset (``val_``-prefixed)."""
        self.val_metrics.reset()
        for batch in distributed_batches:
            self._eval_step(batch)
        return {f"val_{k}": v for k, v in self.val_metrics.result().items()}

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

    def _gather_update(self, metrics: EpochMetrics, per_replica) -> None:
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
