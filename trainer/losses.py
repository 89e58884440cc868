"""Losses for imbalanced multi-label training, chosen by ``loss.name``.

- ``bce``: plain binary cross-entropy.
- ``weighted_bce``: positives of rare labels weighted up, by label counts from
  the Beam job (``((N - n) / n) ** power``, capped), so that a label seen in 20
  of 7,000 documents is not learned as "always no".
- ``focal``: focal loss (Lin et al. 2017), down-weighting easy negatives.

Independently of the loss, ``loss.sample_weights: balanced`` weights each
training example (`BalancedSampleWeights`), as the seeds did with
scikit-learn's "balanced" class weights. Weights are a training matter only:
validation losses and metrics (hence early stopping) are unweighted, and
nothing of them is in the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from doctags_core.config import LossConfig


def positive_weights(label_counts: list[int], n_docs: int, cfg: LossConfig) -> np.ndarray:
    """Per-label positive weights from training label counts."""
    counts = np.maximum(np.asarray(label_counts, dtype="float64"), 1.0)
    ratio = np.maximum((n_docs - counts) / counts, 1.0)
    return np.minimum(ratio**cfg.pos_weight_power, cfg.pos_weight_cap).astype("float32")


@keras.saving.register_keras_serializable(package="doctags")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a weight on each label's positive term."""

    def __init__(self, pos_weights, name="weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(w) for w in np.asarray(pos_weights).ravel()]

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        w = ops.cast(ops.convert_to_tensor(self.pos_weights), y_pred.dtype)
        per_label = -(w * y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
        return ops.mean(per_label, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weights": self.pos_weights}


def make_loss(
    cfg: LossConfig, label_counts: list[int], n_docs: int, reduction="sum_over_batch_size"
):
    """The configured loss; per-example values with ``reduction=None``.

    Args:
        cfg: Loss settings.
        label_counts: Training documents per label, in output-column order.
        n_docs: Training documents.
        reduction: Keras reduction; a custom distributed loop passes None and
            averages over the GLOBAL batch itself.
    """
    if cfg.name == "bce":
        return keras.losses.BinaryCrossentropy(reduction=reduction)
    if cfg.name == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            gamma=cfg.focal_gamma,
            alpha=cfg.focal_alpha,
            apply_class_balancing=cfg.focal_alpha is not None,
            reduction=reduction,
        )
    return WeightedBinaryCrossentropy(
        positive_weights(label_counts, n_docs, cfg), reduction=reduction
    )


def balanced_class_weights(label_counts: list[int], n_docs: int) -> np.ndarray:
    """scikit-learn's "balanced" weight per label: ``n_docs / (n_labels * count)``.

    ``compute_class_weight("balanced")`` with each label as a class and the
    Beam job's train label counts. A label without train documents counts
    as 1: it is never a positive of a training example, the value only has
    to be finite.
    """
    counts = np.maximum(np.asarray(label_counts, dtype="float64"), 1.0)
    return (max(n_docs, 1) / (len(counts) * counts)).astype("float32")


def example_weights(y, class_weights) -> tf.Tensor:
    """Unnormalised weight of each example: the mean class weight of its labels.

    Args:
        y: Multi-hot labels ``[batch, n_labels]``.
        class_weights: From `balanced_class_weights`.

    Returns:
        ``[batch]`` float32; 1 for an example without labels.
    """
    y = tf.cast(y, tf.float32)
    positives = tf.reduce_sum(y, axis=-1)
    total = tf.reduce_sum(y * tf.constant(class_weights, tf.float32), axis=-1)
    return tf.where(positives > 0, total / tf.maximum(positives, 1.0), tf.ones_like(total))


def normalising_scale(values, counts, cap: float | None = None) -> float:
    """The ``s`` for which the mean of ``min(s * w, cap)`` over examples is 1.

    Args:
        values: Distinct unnormalised weights (all > 0).
        counts: Examples having each value.
        cap: Upper bound on a normalised weight (>= 1), or None.

    Without a cap (or when it does not bind) ``s = 1 / mean(w)``. Clipping
    lowers the mean, so with a binding cap the unclipped examples are scaled
    up further until the mean is 1 again (bisection; the mean is monotone in
    ``s``), rather than leaving the mean below 1.
    """
    values = np.asarray(values, dtype="float64")
    counts = np.asarray(counts, dtype="float64")
    n = counts.sum()
    if n == 0:
        return 1.0
    scale = n / float(np.dot(counts, values))
    if cap is None or scale * values.max() <= cap:
        return scale

    def mean(s: float) -> float:
        return float(np.dot(counts, np.minimum(s * values, cap))) / n

    lo, hi = scale, cap / values.min()  # mean(lo) < 1 <= mean(hi) = cap
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < 1 else (lo, mid)
    return hi


class BalancedSampleWeights:
    """Per-example training weights from the labels: ``y -> [batch]`` in TF ops.

    weight(x) = min(s * mean over the positive labels l of x of
    ``n_train / (n_labels * count[l])``, cap), where ``count`` are the Beam
    job's train label counts (the source ``weighted_bce`` uses), an example
    without labels has unnormalised weight 1, and ``s`` makes the mean weight
    over the train split exactly 1, so the learning rate keeps its meaning.

    A pure function of the multi-hot row (a constant vector and a few
    reductions), so it runs inside each replica's step under any
    tf.distribute strategy and under XLA.
    """

    def __init__(self, class_weights, scale: float = 1.0, cap: float | None = None):
        self.class_weights = np.asarray(class_weights, dtype="float32")
        self.scale, self.cap = float(scale), cap
        self.stats: dict = {}

    def __call__(self, y) -> tf.Tensor:
        w = example_weights(y, self.class_weights) * self.scale
        return w if self.cap is None else tf.minimum(w, self.cap)

    @classmethod
    def fit(
        cls,
        label_counts: list[int],
        n_docs: int,
        train_labels: Iterable,
        cap: float | None = None,
    ) -> BalancedSampleWeights:
        """Class weights from the counts; the scale from one pass over the train labels.

        Args:
            label_counts: Train documents per label, in output-column order.
            n_docs: Train documents.
            train_labels: Multi-hot batches of the whole train split
                (`trainer.data.label_batches`).
            cap: See `normalising_scale`.
        """
        class_weights = balanced_class_weights(label_counts, n_docs)
        histogram: dict[float, int] = {}  # one entry per distinct weight (~ label set)
        for y in train_labels:
            values, counts = np.unique(
                example_weights(y, class_weights).numpy(), return_counts=True
            )
            for v, c in zip(values.tolist(), counts.tolist()):
                histogram[v] = histogram.get(v, 0) + c
        values = np.array(sorted(histogram), dtype="float64")
        counts = np.array([histogram[v] for v in sorted(histogram)], dtype="float64")
        weights = cls(class_weights, normalising_scale(values, counts, cap), cap)
        if counts.sum():
            final = np.minimum(values * weights.scale, np.inf if cap is None else cap)
            weights.stats = {
                "train_examples": int(counts.sum()),
                "mean": float(np.dot(counts, final) / counts.sum()),
                "min": float(final.min()),
                "max": float(final.max()),
                "clipped_share": float(counts[values * weights.scale > final].sum())
                / float(counts.sum()),
            }
        return weights

    def summary(self) -> dict:
        """What ``training_summary.json`` records about the weights."""
        return {"scheme": "balanced", "scale": self.scale, "cap": self.cap, **self.stats}


def make_sample_weights(
    cfg: LossConfig,
    label_counts: list[int],
    n_docs: int,
    train_labels: Callable[[], Iterable],
) -> BalancedSampleWeights | None:
    """The configured sample weights, or None for ``loss.sample_weights: none``.

    Args:
        cfg: Loss settings.
        label_counts: Train documents per label, in output-column order.
        n_docs: Train documents.
        train_labels: Returns the train split's multi-hot batches; called
            (one pass) only when weights are configured.
    """
    if cfg.sample_weights == "none":
        return None
    return BalancedSampleWeights.fit(label_counts, n_docs, train_labels(), cfg.sample_weight_cap)


def training_losses(loss_fn: Callable, y, p, sample_weights: Callable | None = None) -> tf.Tensor:
    """Per-example training losses, times the sample weights when there are any.

    The caller averages them over the GLOBAL batch
    (``tf.nn.compute_average_loss``): the weights change each example's
    share, not the divisor, as Keras' ``sum_over_batch_size`` does.
    """
    per_example = loss_fn(y, p)
    if sample_weights is None:
        return per_example
    return per_example * tf.cast(sample_weights(y), per_example.dtype)
