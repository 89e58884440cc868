"""A one-file HTML evaluation report a person reads after `doctags evaluate`.

Plots (matplotlib, PNGs embedded as base64 so the report is one portable
file): per-label F1, F1 against a global threshold, precision-recall curves
of the most frequent labels, and label frequency against F1 with the labels
that matter named on it. Made to be read in a browser at its natural size:
figures as wide as the page's column, fonts of at least 9 pt at 100 dpi,
legends outside the axes where curves cannot run under them. Each figure is
built by a function that returns the matplotlib figure, so tests can check
where its legend is and which names it shows.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter

import numpy as np
from sklearn import metrics as skm

from doctags_core.metrics import threshold_grid

DPI = 100
WIDTH = 9.5  # inches: 950 px at DPI, the page's column
STYLE = {
    "font.size": 11,
    "axes.labelsize": 11,
    "axes.titlesize": 12,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
NAMED_FREQUENT = 5  # labels named on the frequency plot: the most frequent ...
NAMED_WORST = 5  # ... and the lowest F1
# Candidate text offsets (points) around a point, nearest first, tried until one is free:
# crowded points (many labels at F1 0) get their names stacked further out, with a leader line.
_OFFSETS = tuple(
    (dx, dy) for dy in (6, -16, 20, -30, 34, 48, 62, 76, 90) for dx in (8, -8, 30, -30, 60, -60)
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    return plt


def _figure(height: float):
    """A page-wide figure with the report's font sizes and constrained layout."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        return plt.subplots(figsize=(WIDTH, height), dpi=DPI, layout="constrained")


def figure_to_img(fig, alt: str) -> str:
    """The figure as an ``<img>`` with a base64 PNG and a description for screen readers."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _with_support(per_label: list[dict]) -> list[dict]:
    """Labels with at least one document in this split (F1 is undefined for the others)."""
    return [r for r in per_label if r["support"] > 0]


def per_label_f1_figure(per_label: list[dict]):
    """Horizontal F1 bars, most supported label on top; labels absent from the split left out."""
    rows = sorted(_with_support(per_label), key=lambda r: (-r["support"], r["label"]))
    fig, ax = _figure(max(3.0, 0.24 * len(rows) + 1.0))
    ax.barh(range(len(rows)), [r["f1"] for r in rows], color="#3b75af")
    for y, r in enumerate(rows):  # the value, so that an F1 of 0 is not an empty row
        inside = r["f1"] > 0.9  # no room after the bar: white text at its end
        x = r["f1"] - 0.01 if inside else r["f1"] + 0.01
        color = "white" if inside else "#333333"
        ha = "right" if inside else "left"
        ax.text(x, y, f"{r['f1']:.2f}", va="center", ha=ha, fontsize=9, color=color)
    ax.set_yticks(range(len(rows)), [f"{r['label']} ({r['support']})" for r in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.xaxis.grid(True, color="#dddddd")
    ax.set_axisbelow(True)
    ax.set_xlabel("F1 (label and its documents in this split)")
    return fig


def _global_threshold(chosen: list[float]) -> float | None:
    """The model's global threshold: the value most labels use (all of them without per-label)."""
    return Counter(round(t, 6) for t in chosen).most_common(1)[0][0] if chosen else None


def f1_threshold_figure(y_true: np.ndarray, scores: np.ndarray, chosen: list[float]):
    """Micro and macro F1 of one global threshold over the grid; the model's marked."""
    grid = threshold_grid(0.05, 0.95, 0.05)
    micro = [skm.f1_score(y_true, scores >= t, average="micro", zero_division=0) for t in grid]
    macro = [skm.f1_score(y_true, scores >= t, average="macro", zero_division=0) for t in grid]
    fig, ax = _figure(4.0)
    ax.plot(grid, micro, marker="o", label="micro-F1")
    ax.plot(grid, macro, marker="o", label="macro-F1")
    main = _global_threshold(chosen)
    if main is not None:
        ax.axvline(main, color="grey", linestyle="--", label=f"the model's threshold ({main:.2f})")
    others = sorted({t for t in chosen if round(t, 6) != main})
    if others:  # per-label thresholds: ticks along the bottom, not a forest of lines
        ax.plot(
            others,
            [0.01] * len(others),
            "|",
            color="black",
            markersize=12,
            label="per-label thresholds",
        )
    ax.set_xlabel("global threshold (the model's was chosen on validation)")
    ax.set_ylabel("F1 on this split")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.yaxis.grid(True, color="#eeeeee")
    fig.legend(loc="outside right upper")
    return fig


def pr_curves_figure(y_true: np.ndarray, scores: np.ndarray, labels: list[str], top: int = 8):
    """Precision-recall curves of the ``top`` most frequent labels, legend beside the axes."""
    support = y_true.sum(axis=0)
    fig, ax = _figure(5.0)
    for i in np.argsort(-support, kind="stable")[:top]:
        if support[i] == 0:
            continue
        precision, recall, _ = skm.precision_recall_curve(y_true[:, i], scores[:, i])
        ap = skm.average_precision_score(y_true[:, i], scores[:, i])
        ax.plot(recall, precision, linewidth=1.8, label=f"{labels[i]} (AP {ap:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.grid(True, color="#eeeeee")
    fig.legend(loc="outside right upper", title="label (average precision)")
    return fig


def named_labels(per_label: list[dict], train_counts: dict[str, int]) -> dict[str, list[str]]:
    """The labels the frequency plot names: the most frequent in training, and the worst.

    The worst are the lowest F1 on this split among the other labels it
    contains; ties go to the label with more training documents (a failure
    with data says more than one without).
    """
    rows = _with_support(per_label)
    by_count = sorted(rows, key=lambda r: (-train_counts.get(r["label"], 0), r["label"]))
    frequent = [r["label"] for r in by_count[:NAMED_FREQUENT]]
    others = [r for r in rows if r["label"] not in frequent]
    worst = sorted(others, key=lambda r: (r["f1"], -train_counts.get(r["label"], 0), r["label"]))
    return {"frequent": frequent, "worst": [r["label"] for r in worst[:NAMED_WORST]]}


def _free_annotation(ax, name: str, xy, placed: list, color: str):
    """Annotates ``xy`` with ``name`` at the first offset whose text overlaps nothing placed."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    for dx, dy in _OFFSETS:
        text = ax.annotate(
            name,
            xy,
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
            fontsize=9,
            color=color,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.7, "shrinkB": 3},
        )
        text.update_positions(renderer)  # then the text alone: the annotation's own extent
        box = Text.get_window_extent(text, renderer).expanded(1.05, 1.2)  # spans its leader line
        inside = (
            axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1
        ) and axes_box.y0 <= box.y0 <= box.y1 <= axes_box.y1
        if inside and not any(box.overlaps(other) for other in placed):
            placed.append(box)
            return text
        text.remove()
    text = ax.annotate(
        name, xy, xytext=_OFFSETS[0], textcoords="offset points", fontsize=9, color=color
    )
    text.update_positions(renderer)
    placed.append(Text.get_window_extent(text, renderer))
    return text


def frequency_f1_figure(per_label: list[dict], train_counts: dict[str, int]):
    """F1 of each label (in this split) against its training documents, key labels named."""
    rows = _with_support(per_label)
    xs = {r["label"]: max(train_counts.get(r["label"], 0), 0.8) for r in rows}
    fig, ax = _figure(5.0)
    ax.scatter([xs[r["label"]] for r in rows], [r["f1"] for r in rows], s=18, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training documents with the label (log; 0 drawn at 0.8)")
    ax.set_ylabel("F1 on this split")
    ax.set_ylim(-0.04, 1.06)
    ax.grid(True, color="#eeeeee")
    fig.canvas.draw()  # lay out once, then freeze: names are placed by their drawn extents,
    fig.set_layout_engine("none")  # and a new layout at savefig would move the axes
    named = named_labels(per_label, train_counts)
    f1 = {r["label"]: r["f1"] for r in rows}
    placed: list = []
    colors = {"frequent": "#1f4e79", "worst": "#b22222"}
    kinds = [(name, "frequent") for name in named["frequent"]]
    for name, kind in kinds + [(name, "worst") for name in named["worst"]]:
        ax.scatter([xs[name]], [f1[name]], s=40, facecolors="none", edgecolors=colors[kind])
        _free_annotation(ax, name, (xs[name], f1[name]), placed, colors[kind])
    return fig


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


def _summary_tables(report: dict) -> str:
    """Precision, recall and F1 by averaging, then the other figures in one row each."""
    m = report["metrics"]
    averages = [
        {"average": avg, **{k: m[f"{avg}_{k}"] for k in ("precision", "recall", "f1")}}
        for avg in ("micro", "macro", "weighted", "samples")
    ]
    averaged = {f"{row['average']}_{k}" for row in averages for k in ("precision", "recall", "f1")}
    others = [{"metric": k, "value": v} for k, v in m.items() if k not in averaged]
    others += [{"metric": k, "value": v} for k, v in report.get("ranking", {}).items()]
    return (
        "<div class='tables'>"
        + _table(averages, ["average", "precision", "recall", "f1"])
        + _table(others, ["metric", "value"])
        + "</div>"
    )


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _sections(report, y_true, scores, labels, thresholds, train_counts) -> list[tuple[str, str]]:
    per_label = report["per_label"]
    absent = [r["label"] for r in per_label if r["support"] == 0]
    named = named_labels(per_label, train_counts)
    f1 = {r["label"]: r["f1"] for r in per_label}
    columns = ["label", "precision", "recall", "f1", "support", "roc_auc", "pr_auc"]
    bars = figure_to_img(per_label_f1_figure(per_label), "F1 of each label, by support")
    if absent:
        bars += _note(
            f"Not drawn: {len(absent)} labels without a document in this split "
            f"({', '.join(absent[:12])}{' ...' if len(absent) > 12 else ''})."
        )
    frequency = figure_to_img(
        frequency_f1_figure(per_label, train_counts),
        "F1 against training documents; named: " + ", ".join(named["frequent"] + named["worst"]),
    ) + _note(
        "Named in blue, the most frequent in training: "
        + ", ".join(f"{name} (F1 {f1[name]:.2f})" for name in named["frequent"])
        + "; in red, the lowest F1 among the others: "
        + ", ".join(f"{name} ({f1[name]:.2f})" for name in named["worst"])
        + "."
    )
    return [
        ("Summary", _summary_tables(report)),
        ("F1 per label", bars),
        (
            "F1 against the threshold",
            figure_to_img(
                f1_threshold_figure(y_true, scores, thresholds),
                "micro and macro F1 against a global threshold",
            ),
        ),
        (
            "Precision-recall, most frequent labels",
            figure_to_img(
                pr_curves_figure(y_true, scores, labels),
                "precision-recall curves of the most frequent labels",
            ),
        ),
        ("Label frequency against F1", frequency),
        ("Per-label report", _table(sorted(per_label, key=lambda r: -r["support"]), columns)),
    ]


_CSS = (
    "body{font-family:system-ui,sans-serif;font-size:16px;line-height:1.45;color:#222;"
    "max-width:1000px;margin:2em auto;padding:0 1em}"
    "h1{font-size:1.6em}h2{font-size:1.3em;margin-top:1.6em}"
    "img{max-width:100%;height:auto;display:block}"
    ".note{color:#555;font-size:14px}"
    ".tables{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}"
    "table{border-collapse:collapse;font-size:14px}"
    "td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}"
    "tr:nth-child(even) td{background:#f7f7f7}"
    "td:first-child,th:first-child{text-align:left}"
)


def render_report(
    report: dict,
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    thresholds: list[float],
    train_counts: dict[str, int],
) -> str:
    """The whole report as one HTML string."""
    sections = _sections(report, y_true, scores, labels, thresholds, train_counts)
    body = "".join(f"<h2>{html.escape(title)}</h2>\n{content}\n" for title, content in sections)
    title = f"doctags evaluation: {report['split']} split of {report['model']}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{report['documents']} documents, {report['labels']} labels. Thresholds were chosen "
        "on the validation split; curves over thresholds here are for inspection only.</p>"
        f"{body}</body></html>"
    )
