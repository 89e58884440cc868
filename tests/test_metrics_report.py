import numpy as np
import pytest

from doctags_core.metrics import (
    per_label_report,
    ranking_metrics,
    summary_metrics,
    sweep_threshold,
    threshold_grid,
)
from evaluation.report import render_report

Y = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=np.int8)
S = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.6, 0.1, 0.7], [0.2, 0.1, 0.3]])


def test_ranking_metrics_by_hand():
    m = ranking_metrics(Y, S, ks=(1, 2))
    # The all-negative document is left out. Top-1 hits: doc0 yes, doc1 yes, doc2 (label 2) yes.
    assert m["precision_at_1"] == pytest.approx(1.0)
    # Top-2: doc0 {0,1} -> 1 hit, doc1 {1,2} -> 2, doc2 {2,0} -> 2 => 5 / 6
    assert m["precision_at_2"] == pytest.approx(5 / 6)
    # nDCG@2 of doc0 is 1 (its one label ranked first); doc1 and doc2 are perfect too.
    assert m["ndcg_at_2"] == pytest.approx(1.0)
    worse = ranking_metrics(Y, S[:, ::-1], ks=(1,))
    assert worse["precision_at_1"] < 1.0


def test_summary_and_per_label_with_auc():
    pred = (S >= 0.5).astype(np.int8)
    summary = summary_metrics(Y, pred)
    assert summary["micro_f1"] == pytest.approx(1.0 * 2 * 4 / (4 + 5))  # 4 tp, 1 fn, 0 fp
    assert set(k.split("_")[0] for k in summary) >= {"micro", "macro", "weighted", "samples"}
    rows = per_label_report(Y, pred, ["a", "b", "c"], S)
    assert rows[0]["roc_auc"] == pytest.approx(1.0)
    assert rows[0]["support"] == 2
    no_negatives = per_label_report(
        np.ones((2, 1), np.int8), np.ones((2, 1), np.int8), ["x"], np.array([[0.2], [0.9]])
    )
    assert no_negatives[0]["roc_auc"] is None


def test_threshold_sweep_grid_and_choice():
    grid = threshold_grid(0.05, 0.95, 0.05)
    assert len(grid) == 19 and grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(0.95)
    best, curve = sweep_threshold(Y, S, grid, "micro_f1")
    assert 0.35 <= best <= 0.6  # every true score >= 0.6 except 0.4; every false <= 0.3
    assert max(row["micro_f1"] for row in curve) == pytest.approx(1.0)


def test_html_report_is_one_file_with_the_plots():
    pred = (S >= 0.5).astype(np.int8)
    report = {
        "model": "m/1",
        "split": "test",
        "documents": 4,
        "labels": 3,
        "metrics": summary_metrics(Y, pred),
        "ranking": ranking_metrics(Y, S),
        "per_label": per_label_report(Y, pred, ["earn", "acq", "<crude>"], S),
    }
    page = render_report(report, Y, S, ["earn", "acq", "<crude>"], [0.5], {"earn": 10})
    assert page.startswith("<!doctype html>")
    assert page.count("data:image/png;base64,") == 4
    assert "&lt;crude&gt;" in page and "<crude>" not in page


def test_per_label_thresholds_tune_only_labels_with_enough_positives():
    from doctags_core.metrics import apply_thresholds, per_label_thresholds

    rng = np.random.default_rng(0)
    y = np.zeros((200, 3), np.int8)
    y[:40, 0] = 1  # frequent label, positives scored around 0.3
    y[:2, 2] = 1  # too rare to tune
    s = rng.random((200, 3)) * 0.2
    s[:40, 0] = 0.3 + rng.random(40) * 0.05
    grid = threshold_grid(0.05, 0.95, 0.05)
    th = per_label_thresholds(y, s, grid, fallback=0.5, min_positives=3)
    assert 0.2 <= th[0] <= 0.3  # found below the global 0.5
    assert th[1] == 0.5 and th[2] == 0.5  # no / too few positives: global fallback
    pred = apply_thresholds(s, th)
    assert pred[:40, 0].all() and not pred[40:, 0].any()
    top1 = apply_thresholds(s, [0.99] * 3, always_top1=True)
    assert (top1.sum(axis=1) == 1).all()


def test_thresholds_by_label_falls_back_to_the_global_value():
    from doctags_core.metrics import thresholds_by_label

    assert thresholds_by_label({"threshold": 0.3}, ["a", "b"]) == [0.3, 0.3]
    saved = {"threshold": 0.3, "per_label": {"b": 0.55}}
    assert thresholds_by_label(saved, ["a", "b", "c"]) == [0.3, 0.55, 0.3]


# --- the report reads well in a browser ---------------------------------------------
def _realistic(n_docs=400, n_labels=30, seed=0):
    """Zipf-like label frequencies, scores that separate frequent labels better."""
    rng = np.random.default_rng(seed)
    freq = 0.3 / np.arange(1, n_labels + 1) ** 0.9
    y = (rng.random((n_docs, n_labels)) < freq).astype(np.int8)
    y[:, -2:] = 0  # two labels without a document in this split
    noise = rng.random((n_docs, n_labels)) * np.linspace(0.4, 1.2, n_labels)
    scores = np.clip(0.55 * y + noise * 0.6, 0, 1)
    labels = [f"label-{i:02d}" for i in range(n_labels)]
    pred = (scores >= 0.5).astype(np.int8)
    per_label = per_label_report(y, pred, labels, scores)
    train_counts = {name: int(2000 * f) for name, f in zip(labels, freq)}
    return y, scores, labels, per_label, train_counts


def _extent(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


def test_legends_sit_beside_the_axes_not_on_the_curves():
    from evaluation import report as R

    y, scores, labels, _, _ = _realistic()
    for fig in (
        R.f1_threshold_figure(y, scores, [0.35] * 20 + [0.2, 0.6]),
        R.pr_curves_figure(y, scores, labels),
    ):
        fig.canvas.draw()
        (ax,) = fig.axes
        assert len(fig.legends) == 1 and ax.get_legend() is None
        assert not _extent(fig.legends[0], fig).overlaps(_extent(ax, fig))
        assert fig.get_figwidth() * fig.dpi >= 900  # as wide as the page's column


def test_frequency_plot_names_the_most_frequent_and_the_worst_without_overlap():
    from matplotlib.text import Text

    from evaluation import report as R

    _, _, _, per_label, train_counts = _realistic()
    named = R.named_labels(per_label, train_counts)
    assert named["frequent"] == [f"label-{i:02d}" for i in range(5)]
    drawn = [r for r in per_label if r["support"] > 0]
    lowest = min(r["f1"] for r in drawn if r["label"] not in named["frequent"])
    assert named["worst"][0] in {r["label"] for r in drawn if r["f1"] == lowest}
    assert not set(named["worst"]) & set(named["frequent"])
    assert "label-29" not in named["worst"]  # no document in this split: no F1 to rank

    fig = R.frequency_f1_figure(per_label, train_counts)
    fig.canvas.draw()
    (ax,) = fig.axes
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == set(named["frequent"]) | set(named["worst"])
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in texts.values()]
    axes_box = _extent(ax, fig)
    for i, box in enumerate(boxes):
        assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1, "a name outside the axes"
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), "names overlap"


def test_every_text_is_readable_and_absent_labels_are_not_drawn_as_zero():
    from matplotlib.text import Text

    from evaluation import report as R

    y, scores, labels, per_label, train_counts = _realistic()
    figures = [
        R.per_label_f1_figure(per_label),
        R.f1_threshold_figure(y, scores, [0.4]),
        R.pr_curves_figure(y, scores, labels),
        R.frequency_f1_figure(per_label, train_counts),
    ]
    for fig in figures:
        fig.canvas.draw()
        texts = [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
        assert len(texts) > 5 and min(t.get_fontsize() for t in texts) >= 9
    bars = figures[0].axes[0].patches
    assert len(bars) == sum(1 for r in per_label if r["support"] > 0) == len(labels) - 2
    report = {
        "model": "m/1",
        "split": "test",
        "documents": len(y),
        "labels": len(labels),
        "metrics": summary_metrics(y, (scores >= 0.5).astype(np.int8)),
        "per_label": per_label,
    }
    page = render_report(report, y, scores, labels, [0.5], train_counts)
    assert "Not drawn: 2 labels without a document in this split (label-28, label-29)" in page
    assert "max-width:100%" in page  # images shrink with the window, never overflow
