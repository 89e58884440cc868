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
