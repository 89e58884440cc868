"""Decision thresholds, chosen on the VALIDATION split only and baked into the export."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from doctags_core.config import Config
from doctags_core.iterator_release import iterate_and_release
from doctags_core.labels import LABEL_DTYPE
from doctags_core.metrics import (
    apply_thresholds,
    per_label_thresholds,
    sweep_threshold,
    threshold_grid,
)


def predict_split(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, scores)`` over a whole ``(ids, labels)`` dataset."""
    ys, scores = [], []
    for ids, y in iterate_and_release(dataset):
        ys.append(y.numpy())
        scores.append(model(ids, training=False).numpy())
    return np.concatenate(ys).astype(LABEL_DTYPE), np.concatenate(scores)


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


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """A fold index per document: a seeded permutation dealt round-robin."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


# --- threshold policies of model.family: auto ---------------------------------------
#
# Measured on four corpora (bench/research/FINDINGS.md: Reuters, Debian debtags, two
# synthetic shapes), thresholds per label-FREQUENCY bucket were the most reliable gain:
# few parameters (<= 11), test macro-F1 +0.02 to +0.08 over one global threshold on all
# 8 model/corpus pairs, micro within -0.005..+0.015. One threshold per label (tuned on a
# small validation split) looks best on the very documents it was tuned on and loses on
# held-out ones; shrunk toward its bucket's threshold it competes with the buckets.

SHRINK = 10.0  # bucket_per_label: validation positives worth the bucket's threshold
MAX_BUCKET = 10  # labels with >= 1023 train documents share the last bucket


def grid_counts(y, scores, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives of every label at every grid threshold, and positives.

    Returns:
        ``tp`` and ``fp`` of shape ``[len(grid), labels]`` (int64) and ``pos`` ``[labels]``.
    """
    truth = np.asarray(y).astype(bool)
    pos = truth.sum(axis=0).astype(np.int64)
    tp = np.empty((len(grid), truth.shape[1]), dtype=np.int64)
    fp = np.empty_like(tp)
    for i, t in enumerate(grid):
        decided = scores >= t
        tp[i] = (decided & truth).sum(axis=0)
        fp[i] = decided.sum(axis=0) - tp[i]
    return tp, fp, pos


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _best(values, grid, prefer: float) -> float:
    """The grid value of the best score; ties go to the one nearest ``prefer``."""
    ties = np.flatnonzero(values >= values.max() - 1e-12)
    return float(grid[ties[np.argmin(np.abs(grid[ties] - prefer))]])


def global_from_counts(tp, fp, pos, grid) -> float:
    """The micro-F1-optimal single threshold (ties: the lowest, as `sweep_threshold`)."""
    micro = _f1(tp.sum(axis=1), fp.sum(axis=1), pos.sum() - tp.sum(axis=1))
    return float(grid[np.flatnonzero(micro >= micro.max() - 1e-12)[0]])


def frequency_buckets(train_counts) -> np.ndarray:
    """A label's bucket by its train documents n: ``min(floor(log2(n + 1)), 10)``.

    n <= 2 | 3-6 | 7-14 | ... | >= 1023 (a label without train documents joins
    the rarest bucket).
    """
    n = np.maximum(np.asarray(train_counts, dtype=np.float64), 1)
    return np.minimum(np.floor(np.log2(n + 1)), MAX_BUCKET).astype(np.int64)


def bucket_thresholds(tp, fp, pos, grid, buckets, fallback: float) -> np.ndarray:
    """One threshold per frequency bucket: the pooled micro-F1 optimum of its labels.

    A bucket without a validation positive keeps ``fallback`` (the global threshold).
    """
    out = np.full(tp.shape[1], fallback, dtype=np.float64)
    for b in np.unique(buckets):
        cols = buckets == b
        if pos[cols].sum() == 0:
            continue
        t, f = tp[:, cols].sum(axis=1), fp[:, cols].sum(axis=1)
        out[cols] = _best(_f1(t, f, pos[cols].sum() - t), grid, fallback)
    return out


def per_label_from(tp, fp, pos, grid, base, min_positives: int, shrink: float) -> np.ndarray:
    """Each label's F1-optimal threshold (labels with >= ``min_positives`` positives).

    With ``shrink`` m > 0 it is pulled toward the label's ``base`` threshold by
    its validation support n: ``(n * t_label + m * base) / (n + m)``; rarer
    labels keep ``base``.
    """
    out = np.asarray(base, dtype=np.float64).copy()
    f1 = _f1(tp, fp, pos[None, :] - tp)
    for i in np.flatnonzero(pos >= min_positives):
        t = _best(f1[:, i], grid, out[i])
        out[i] = (pos[i] * t + shrink * out[i]) / (pos[i] + shrink) if shrink else t
    return out


def policy_thresholds(
    policy: str, y, scores, cfg: Config, train_counts
) -> tuple[float, np.ndarray]:
    """``(global threshold, one threshold per label)`` of a policy, tuned on ``(y, scores)``.

    Policies: ``global`` (one threshold), ``bucket`` (one per label-frequency
    bucket), ``bucket_per_label`` (buckets, then each label with at least
    ``threshold.min_positives`` positives its own, shrunk toward its bucket's)
    and ``per_label`` (each such label its own, unshrunk; others the global).
    """
    th = cfg.threshold
    grid = threshold_grid(th.start, th.stop, th.step)
    tp, fp, pos = grid_counts(y, scores, grid)
    best = global_from_counts(tp, fp, pos, grid)
    flat = np.full(tp.shape[1], best)
    if policy == "global":
        return best, flat
    if policy == "per_label":
        return best, per_label_from(tp, fp, pos, grid, flat, th.min_positives, 0.0)
    buckets = bucket_thresholds(tp, fp, pos, grid, frequency_buckets(train_counts), best)
    if policy == "bucket":
        return best, buckets
    return best, per_label_from(tp, fp, pos, grid, buckets, th.min_positives, SHRINK)


def cross_fitted_decisions(
    policy: str, y, scores, cfg: Config, train_counts, folds: int, seed: int
) -> np.ndarray:
    """0/1 decisions where each fold's thresholds were tuned on the other folds."""
    fold = fold_of(len(y), folds, seed)
    pred = np.zeros(np.shape(y), dtype=np.int32)
    for k in range(folds):
        held = fold == k
        _, t = policy_thresholds(policy, y[~held], scores[~held], cfg, train_counts)
        pred[held] = apply_thresholds(scores[held], t, cfg.threshold.always_top1)
    return pred


def cross_fitted_f1(
    policy: str, y, scores, cfg: Config, train_counts, folds: int, repeats: int
) -> tuple[float, float]:
    """Micro- and macro-F1 of a policy on documents its thresholds were not tuned on.

    The split is shuffled (seeds ``training.seed`` + 0, 1, ...), cut in
    ``folds``; each fold is decided by thresholds tuned on the others; the
    pooled decisions are scored; the scores are averaged over ``repeats``
    shuffles. Tuned and judged on the same documents, a per-label policy
    would always look best.
    """
    micro, macro = [], []
    for r in range(repeats):
        seed = cfg.training.seed + r
        pred = cross_fitted_decisions(policy, y, scores, cfg, train_counts, folds, seed)
        tp, fp, pos = grid_counts(y, pred, [0.5])
        micro.append(float(_f1(tp.sum(), fp.sum(), pos.sum() - tp.sum())))
        macro.append(float(_f1(tp[0], fp[0], pos - tp[0]).mean()))
    return float(np.mean(micro)), float(np.mean(macro))
