"""Decision thresholds, chosen on the VALIDATION split only and baked into the export."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from doctags_core.config import Config
from doctags_core.metrics import per_label_thresholds, sweep_threshold, threshold_grid


def predict_split(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, scores)`` over a whole ``(ids, labels)`` dataset."""
    ys, scores = [], []
    for ids, y in dataset:
        ys.append(y.numpy())
        scores.append(model(ids, training=False).numpy())
    return np.concatenate(ys).astype(np.int8), np.concatenate(scores)


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
