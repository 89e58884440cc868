"""A one-file HTML evaluation report a person reads after `doctags evaluate`.

Plots (matplotlib, PNGs embedded as base64 so the report is one portable
file): per-label F1, F1 against a global threshold, precision-recall curves
of the most frequent labels, and label frequency against F1.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from sklearn import metrics as skm

from doctags_core.metrics import threshold_grid


def _figure_to_img(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    return plt


def plot_per_label_f1(per_label: list[dict]) -> str:
    """Horizontal F1 bars, labels ordered by support (most frequent on top)."""
    plt = _pyplot()
    rows = sorted(per_label, key=lambda r: -r["support"])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(rows))))
    ax.barh(range(len(rows)), [r["f1"] for r in rows], color="#3b75af")
    ax.set_yticks(range(len(rows)), [f"{r['label']} ({r['support']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (label and its support in this split)")
    return _figure_to_img(fig)


def plot_f1_vs_threshold(y_true: np.ndarray, scores: np.ndarray, chosen: list[float]) -> str:
    """Micro and macro F1 of one global threshold over the grid, chosen value marked."""
    plt = _pyplot()
    grid = threshold_grid(0.05, 0.95, 0.05)
    micro = [skm.f1_score(y_true, scores >= t, average="micro", zero_division=0) for t in grid]
    macro = [skm.f1_score(y_true, scores >= t, average="macro", zero_division=0) for t in grid]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(grid, micro, marker="o", label="micro-F1")
    ax.plot(grid, macro, marker="o", label="macro-F1")
    for t in sorted(set(chosen)):
        ax.axvline(t, color="grey", linestyle="--")
    ax.set_xlabel("global threshold (dashed: the model's, chosen on validation)")
    ax.set_ylabel("F1 on this split")
    ax.set_ylim(0, 1)
    ax.legend()
    return _figure_to_img(fig)


def plot_pr_curves(y_true: np.ndarray, scores: np.ndarray, labels: list[str], top: int = 8) -> str:
    """Precision-recall curves of the ``top`` most frequent labels."""
    plt = _pyplot()
    support = y_true.sum(axis=0)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i in np.argsort(-support, kind="stable")[:top]:
        if support[i] == 0:
            continue
        precision, recall, _ = skm.precision_recall_curve(y_true[:, i], scores[:, i])
        ap = skm.average_precision_score(y_true[:, i], scores[:, i])
        ax.plot(recall, precision, label=f"{labels[i]} (AP {ap:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    return _figure_to_img(fig)


def plot_frequency_vs_f1(per_label: list[dict], train_counts: dict[str, int]) -> str:
    """F1 of each label against its number of training documents (log scale)."""
    plt = _pyplot()
    xs = [max(train_counts.get(r["label"], 0), 0.8) for r in per_label]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(xs, [r["f1"] for r in per_label], s=14, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("training documents with the label (log)")
    ax.set_ylabel("F1 on this split")
    ax.set_ylim(-0.02, 1.02)
    return _figure_to_img(fig)


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if v is None:
            return "–"
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(
    report: dict,
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    thresholds: list[float],
    train_counts: dict[str, int],
) -> str:
    """The whole report as one HTML string."""
    summary = [{"metric": k, "value": v} for k, v in report["metrics"].items()]
    summary += [{"metric": k, "value": v} for k, v in report.get("ranking", {}).items()]
    per_label = report["per_label"]
    columns = ["label", "precision", "recall", "f1", "support", "roc_auc", "pr_auc"]
    sections = [
        ("Summary", _table(summary, ["metric", "value"])),
        ("F1 per label", plot_per_label_f1(per_label)),
        ("F1 against the threshold", plot_f1_vs_threshold(y_true, scores, thresholds)),
        ("Precision-recall, most frequent labels", plot_pr_curves(y_true, scores, labels)),
        ("Label frequency against F1", plot_frequency_vs_f1(per_label, train_counts)),
        (
            "Per-label report",
            _table(sorted(per_label, key=lambda r: -r["support"]), columns),
        ),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>\n{content}\n" for title, content in sections)
    title = f"doctags evaluation: {report['split']} split of {report['model']}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:980px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{report['documents']} documents, {report['labels']} labels. Thresholds were chosen "
        "on the validation split; curves over thresholds here are for inspection only.</p>"
        f"{body}</body></html>"
    )
