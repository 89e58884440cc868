"""Losses for imbalanced multi-label training, chosen by ``loss.name``.

- ``bce``: plain binary cross-entropy.
- ``weighted_bce``: positives of rare labels weighted up, by label counts from
  the Beam job (``((N - n) / n) ** power``, capped), so that a label seen in 20
  of 7,000 documents is not learned as "always no".
- ``focal``: focal loss (Lin et al. 2017), down-weighting easy negatives.
"""

from __future__ import annotations

import keras
import numpy as np
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
