"""The distributed train and eval steps, and the metrics they accumulate.

Per step, each replica computes the loss of its share of the global batch
and divides the SUM by the size of the whole global batch (all-reduced, so
a short last batch is averaged correctly), so the summed gradients equal
those of one device seeing the global batch. With sample weights
(``loss.sample_weights``), each training example's loss is multiplied by
its weight before that average (still divided by the example count), and
the reported training loss is the weighted one, as in Keras; validation
losses and metrics are never weighted, so early stopping compares like
with like.

Per-step host round trips and cross-replica traffic are what made the loop
slower than Keras ``fit``, so:

- one call runs several steps (``training.steps_per_call``) inside a
  ``tf.function`` loop, as Keras' ``steps_per_execution`` does;
- metrics are never gathered per step: each replica adds its loss sum,
  example count and the AUC confusion counts of its examples (Keras' own
  bucketing, `confusion_counts`) into replica-local accumulators, and one
  all-reduce per call moves them into the epoch totals. Confusion counts are
  whole numbers, so their sum does not depend on the layout, and every
  worker holds the same totals (early stopping stays in lockstep).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from doctags_core.iterator_release import iterate_and_release
from trainer.losses import training_losses

SUM = tf.distribute.ReduceOp.SUM
NUM_THRESHOLDS = 200  # keras.metrics.AUC's default
AUC_CURVES = {"pr_auc": "PR", "roc_auc": "ROC"}


def confusion_counts(y, p, num_thresholds: int = NUM_THRESHOLDS) -> tf.Tensor:
    """``[4, T]`` float32 TP, FP, TN, FN counts, micro-averaged (labels flattened).

    The same numbers `keras.metrics.AUC.update_state` adds (its bucketing for
    evenly spaced thresholds with the epsilon ends), so `EpochMetrics`
    reports what Keras would; tested against it.
    """
    p = tf.clip_by_value(tf.reshape(tf.cast(p, tf.float32), [-1]), 0.0, 1.0)
    y = tf.cast(tf.cast(tf.reshape(y, [-1]), tf.bool), tf.float32)
    buckets = tf.nn.relu(tf.math.ceil(p * float(num_thresholds - 1)) - 1)
    buckets = tf.cast(buckets, tf.int32)

    def above(weights):  # examples whose score is above each threshold
        per_bucket = tf.math.unsorted_segment_sum(weights, buckets, num_thresholds)
        return tf.reverse(tf.cumsum(tf.reverse(per_bucket, [0])), [0])

    tp, fp = above(y), above(1.0 - y)
    tn = tf.reduce_sum(1.0 - y) - fp
    fn = tf.reduce_sum(y) - tp
    return tf.stack([tp, fp, tn, fn])


class EpochMetrics:
    """Mean loss and micro-averaged PR/ROC AUC over one epoch (or one split).

    The totals are plain float64 variables updated in cross-replica context
    from all-reduced sums, so every worker holds the same values, and they
    are saved with the checkpoint: a resumed epoch reports what an
    uninterrupted one would have.
    """

    def __init__(self, prefix: str):
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.examples = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="examples")
        self.confusion = tf.Variable(
            tf.zeros([4, NUM_THRESHOLDS], tf.float64), trainable=False, name="confusion"
        )
        # Micro-averaged (labels flattened): macro AUCs are dominated by labels
        # with no positive in a small validation split and barely move. Keras'
        # AUC objects only turn the counts into areas.
        self._aucs = {
            k: keras.metrics.AUC(curve=c, name=f"{prefix}{k}") for k, c in AUC_CURVES.items()
        }

    @property
    def variables(self) -> list:
        return [self.loss_sum, self.examples, self.confusion]

    def add(self, totals) -> None:
        """Adds ``[loss_sum, examples, *confusion]`` (as `Accumulators.packed`)."""
        totals = tf.cast(totals, tf.float64)
        self.loss_sum.assign_add(totals[0])
        self.examples.assign_add(totals[1])
        self.confusion.assign_add(tf.reshape(totals[2:], [4, NUM_THRESHOLDS]))

    def reset(self) -> None:
        for v in self.variables:
            v.assign(tf.zeros_like(v))

    def result(self) -> dict[str, float]:
        out = {"loss": float(self.loss_sum.numpy() / max(self.examples.numpy(), 1.0))}
        tp, fp, tn, fn = self.confusion.numpy().astype("float32")
        for key, auc in self._aucs.items():
            for var, value in zip(
                (auc.true_positives, auc.false_positives, auc.true_negatives, auc.false_negatives),
                (tp, fp, tn, fn),
            ):
                var.assign(value)
            out[key] = float(auc.result().numpy())
        return out


class Accumulators:
    """Replica-local sums between two all-reduces (``ON_READ`` variables).

    Each replica adds to its own copy without any cross-replica traffic;
    `packed` is read in replica context and summed over all replicas of all
    workers once per call.
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        with strategy.scope():
            self.sums = tf.Variable(
                tf.zeros([2 + 4 * NUM_THRESHOLDS], tf.float64),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name="replica_sums",
            )

    def add(self, loss_sum, y, p) -> None:
        """In replica context: this replica's loss sum, example count and counts."""
        count = tf.cast(tf.shape(y)[0], tf.float64)
        counts = tf.reshape(tf.cast(confusion_counts(y, p), tf.float64), [-1])
        self.sums.assign_add(tf.concat([[tf.cast(loss_sum, tf.float64), count], counts], 0))

    def reset(self) -> None:
        """In cross-replica context: zeroes every replica's copy."""
        self.strategy.run(lambda: self.sums.assign(tf.zeros_like(self.sums)))

    def total(self) -> tf.Tensor:
        """In cross-replica context: the sums over every replica of every worker."""
        per_replica = self.strategy.run(lambda: tf.identity(self.sums))
        return self.strategy.reduce(SUM, per_replica, axis=None)


class DistributedSteps:
    """The train steps and the evaluation pass of one model under one strategy.

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
        self._sums = Accumulators(strategy)
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self._train_steps = tf.function(self._distributed_train_steps)
        self._eval_step = tf.function(self._distributed_eval_step)
        self._collect_val = tf.function(lambda: self._collect_sums(self.val_metrics))
        compile_replica = tf.function(jit_compile=True) if jit_compile else (lambda f: f)
        self._grads = compile_replica(self._replica_gradients)
        self._scores = compile_replica(self._replica_scores)

    def train_steps(self, iterator, steps: int) -> None:
        """``steps`` optimizer steps on the next global batches of ``iterator``.

        Args:
            iterator: Over a distributed dataset (one element per replica per step).
            steps: How many steps this call runs; a tensor argument, so every
                count shares one trace.
        """
        self._train_steps(iterator, tf.constant(steps, tf.int32))

    def evaluate(self, distributed_batches) -> dict[str, float]:
        """Loss and AUCs over a whole distributed dataset (``val_``-prefixed)."""
        self.val_metrics.reset()
        for batch in iterate_and_release(distributed_batches):
            self._eval_step(batch)
        self._collect_val()
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
        self._sums.add(loss_sum, y, p)

    def _replica_scores(self, ids):
        return tf.cast(self.model(ids, training=False), tf.float32)

    def _replica_eval(self, ids, y):
        p = self._scores(ids)
        self._sums.add(tf.reduce_sum(self.loss_fn(y, p)), y, p)

    def _collect_sums(self, metrics: EpochMetrics) -> None:
        metrics.add(self._sums.total())
        self._sums.reset()

    def _distributed_train_steps(self, iterator, steps):
        for _ in tf.range(steps):
            self.strategy.run(self._replica_train, next(iterator))
        self._collect_sums(self.train_metrics)

    def _distributed_eval_step(self, batch):
        self.strategy.run(self._replica_eval, batch)
