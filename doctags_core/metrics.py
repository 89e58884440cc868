"""Multi-label metrics and the threshold sweep, shared by trainer and evaluator."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from doctags_core.labels import LABEL_DTYPE


def summary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Micro/macro/weighted/samples F1, precision and recall, Hamming loss, subset accuracy."""
    out: dict[str, float] = {}
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
        out[f"{average}_f1"] = float(f)
    out["hamming_loss"] = float(skm.hamming_loss(y_true, y_pred))
    out["subset_accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    return out


def ranking_metrics(
    y_true: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = (1, 3, 5), chunk: int = 4096
) -> dict[str, float]:
    """Precision@k and nDCG@k over documents (threshold-free ranking quality).

    Documents without any true label are left out, as their ideal DCG is 0.
    Rows are ranked ``chunk`` at a time: a full argsort would hold two
    8-byte copies of the score matrix (0.8 GB for 100k documents x 500 labels).
    """
    has_labels = np.flatnonzero(y_true.sum(axis=1) > 0)
    if len(has_labels) == 0:
        return {}
    n_labels = y_true.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, n_labels + 2))
    sums = {f"{name}_at_{k}": 0.0 for k in ks for name in ("precision", "ndcg")}
    for start in range(0, len(has_labels), chunk):
        rows = has_labels[start : start + chunk]
        y, s = y_true[rows], scores[rows]
        order = np.argsort(-s, axis=1, kind="stable")
        gains = np.take_along_axis(y, order, axis=1).astype(np.float64)
        n_true = y.sum(axis=1)
        for k in ks:
            k_eff = min(k, n_labels)
            sums[f"precision_at_{k}"] += float(gains[:, :k_eff].sum(axis=1).sum() / k)
            dcg = (gains[:, :k_eff] * discounts[:k_eff]).sum(axis=1)
            ideal = np.array([discounts[: min(int(n), k_eff)].sum() for n in n_true])
            sums[f"ndcg_at_{k}"] += float((dcg / ideal).sum())
    out: dict[str, float] = {}
    for k in ks:  # the order the keys always had
        for name in ("precision", "ndcg"):
            out[f"{name}_at_{k}"] = sums[f"{name}_at_{k}"] / len(has_labels)
    return out


def _label_auc(y: np.ndarray, s: np.ndarray):
    """ROC-AUC and PR-AUC (average precision) of one label; None without both classes."""
    if y.min() == y.max():
        return None, None
    return float(skm.roc_auc_score(y, s)), float(skm.average_precision_score(y, s))


def per_label_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], scores: np.ndarray | None = None
) -> list[dict]:
    """Per-label precision, recall, F1 and support (like classification_report).

    With ``scores``, also ROC-AUC and PR-AUC per label (None for a label that
    has no positive, or no negative, in ``y_true``).
    """
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    rows = []
    for i, name in enumerate(labels):
        row = {
            "label": name,
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        if scores is not None:
            row["roc_auc"], row["pr_auc"] = _label_auc(y_true[:, i], scores[:, i])
        rows.append(row)
    return rows


def threshold_grid(start: float, stop: float, step: float) -> np.ndarray:
    """The inclusive grid start, start+step, ..., stop (rounded to avoid drift)."""
    count = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(count), 6)


def sweep_threshold(
    y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray, metric: str = "micro_f1"
) -> tuple[float, list[dict]]:
    """Picks the global threshold that maximises ``metric`` on the given split.

    Call it with VALIDATION scores only: choosing on test leaks the test set.

    Returns:
        The best threshold (the lowest among ties) and the whole curve.
    """
    average = metric.split("_")[0]
    curve = []
    for t in grid:
        pred = (scores >= t).astype(LABEL_DTYPE)
        f = skm.f1_score(y_true, pred, average=average, zero_division=0)
        curve.append({"threshold": float(t), metric: float(f)})
    best = max(curve, key=lambda row: (row[metric], -row["threshold"]))
    return best["threshold"], curve


def per_label_thresholds(
    y_true: np.ndarray,
    scores: np.ndarray,
    grid: np.ndarray,
    fallback: float,
    min_positives: int,
) -> list[float]:
    """One threshold per label maximising that label's F1 on the given split.

    Call it with VALIDATION scores only. A label with fewer than
    ``min_positives`` positives there keeps ``fallback`` (the global
    threshold): tuning on one or two examples would just memorise them.
    """
    thresholds = []
    for i in range(y_true.shape[1]):
        y = y_true[:, i]
        if y.sum() < min_positives:
            thresholds.append(float(fallback))
            continue
        pred = scores[:, i][:, None] >= grid[None, :]
        tp = (pred & (y[:, None] == 1)).sum(axis=0)
        fp = (pred & (y[:, None] == 0)).sum(axis=0)
        fn = y.sum() - tp
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = np.flatnonzero(f1 == f1.max())
        # Among ties, the threshold nearest the global one (least surprise).
        thresholds.append(float(grid[best[np.argmin(np.abs(grid[best] - fallback))]]))
    return thresholds


def thresholds_by_label(saved: dict, labels: list[str]) -> list[float]:
    """One threshold per label from ``thresholds.json`` content, in ``labels`` order.

    The file always has the global ``threshold``; with per-label tuning it
    also maps labels to their own in ``per_label``. Labels it does not name
    use the global value.
    """
    threshold = float(saved["threshold"])
    per_label = saved.get("per_label") or {}
    return [float(per_label.get(label, threshold)) for label in labels]


def apply_thresholds(scores: np.ndarray, thresholds, always_top1: bool = False) -> np.ndarray:
    """0/1 decisions as the exported graph makes them (optionally top-1 always on)."""
    pred = (scores >= np.asarray(thresholds, dtype=scores.dtype)[None, :]).astype(LABEL_DTYPE)
    if always_top1 and scores.shape[1]:
        pred[np.arange(len(scores)), scores.argmax(axis=1)] = 1
    return pred


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table for terminals and logs."""

    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(cell(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)
