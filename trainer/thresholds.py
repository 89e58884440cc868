"""Decision thresholds, chosen on the VALIDATION split only and baked into the export."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from doctags_core.config import Config
from doctags_core.metrics import (
    apply_thresholds,
    per_label_thresholds,
    sweep_threshold,
    threshold_grid,
)


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


def fit_thresholds(policy: str, y, scores, cfg: Config) -> tuple[float, np.ndarray]:
    """``(global threshold, one threshold per label)`` of a policy, tuned on ``(y, scores)``.

    ``global`` gives every label the swept global threshold; ``per_label``
    tunes each label's own, labels with fewer than ``threshold.min_positives``
    positives keeping the global one.
    """
    th = cfg.threshold
    grid = threshold_grid(th.start, th.stop, th.step)
    best, _ = sweep_threshold(y, scores, grid, th.metric)
    if policy == "global":
        return best, np.full(y.shape[1], best)
    return best, np.asarray(per_label_thresholds(y, scores, grid, best, th.min_positives))


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """A fold index per document: a seeded permutation dealt round-robin."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


def cross_fitted_decisions(policy: str, y, scores, cfg: Config, folds: int) -> np.ndarray:
    """0/1 decisions where each fold's thresholds were tuned on the other folds.

    What a threshold policy scores on documents it was not tuned on: tuned
    and judged on the same validation documents, a per-label threshold
    would always look best.
    """
    pred = np.zeros(y.shape, dtype=np.int32)
    fold = fold_of(len(y), folds, cfg.training.seed)
    for k in range(folds):
        held_out = fold == k
        _, thresholds = fit_thresholds(policy, y[~held_out], scores[~held_out], cfg)
        pred[held_out] = apply_thresholds(scores[held_out], thresholds, cfg.threshold.always_top1)
    return pred
