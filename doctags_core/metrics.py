"""Multi-label metrics and the threshold sweep, shared by trainer and evaluator."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def summary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Micro/macro/samples F1, precision and recall, and Hamming loss."""
    out: dict[str, float] = {}
    for average in ("micro", "macro", "samples"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
        out[f"{average}_f1"] = float(f)
    out["hamming_loss"] = float(skm.hamming_loss(y_true, y_pred))
    out["subset_accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    return out


def per_label_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support for every label, in vocabulary order."""
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    return [
        {
            "label": name,
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(labels)
    ]


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
        f = skm.f1_score(y_true, (scores >= t).astype(np.int8), average=average, zero_division=0)
        curve.append({"threshold": float(t), metric: float(f)})
    best = max(curve, key=lambda row: (row[metric], -row["threshold"]))
    return best["threshold"], curve


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
