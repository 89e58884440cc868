"""Issue 16 audit: every 0/1 label matrix with > 128 labels and > 127 positives per label.

int8 indicators wrap at 128: as class indices inside scikit-learn and in
any product or sum that numpy does not widen. Each consumer of a label
matrix is checked here against counts computed independently in int64.
"""

import numpy as np
import pytest

from doctags_core.labels import LABEL_DTYPE, multi_hot
from doctags_core.metrics import (
    apply_thresholds,
    per_label_report,
    per_label_thresholds,
    ranking_metrics,
    summary_metrics,
    sweep_threshold,
    threshold_grid,
)

N_DOCS, N_LABELS = 400, 160  # every label on ~200 documents: counts > 127, indices > 127


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(16)
    truth = rng.random((N_DOCS, N_LABELS)) < 0.5
    names = [f"label-{i:03d}" for i in range(N_LABELS)]
    lists = [[names[j] for j in np.flatnonzero(row)] for row in truth]
    scores = np.clip(0.35 * truth + 0.65 * rng.random(truth.shape), 0, 1).astype(np.float32)
    return names, lists, truth.astype(np.int64), scores


def _f1(y, pred):
    """Per-label and micro F1 from int64 counts: the independent reference."""
    y, pred = y.astype(np.int64), pred.astype(np.int64)
    tp = (y * pred).sum(axis=0)
    fp = ((1 - y) * pred).sum(axis=0)
    fn = (y * (1 - pred)).sum(axis=0)
    per_label = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    return per_label, micro


def test_multi_hot_is_int32_and_exact_beyond_127(data):
    names, lists, truth, _ = data
    y = multi_hot(lists, names)
    assert y.dtype == np.dtype(LABEL_DTYPE) == np.int32
    np.testing.assert_array_equal(y, truth)
    assert y.sum(axis=0).min() > 127 and y[:, 150].sum() == truth[:, 150].sum()
    # Label co-occurrence counts (a product numpy does NOT widen) stay exact.
    np.testing.assert_array_equal(y.T @ y, truth.T @ truth)
    assert (y.T @ y).max() > 127


def test_decisions_and_metrics_match_int64_counts(data):
    names, lists, truth, scores = data
    y = multi_hot(lists, names)
    pred = apply_thresholds(scores, [0.5] * N_LABELS)
    assert pred.dtype == np.int32 and pred.sum(axis=0).min() > 127
    per_label, micro = _f1(truth, (scores >= 0.5))
    m = summary_metrics(y, pred)
    assert m["micro_f1"] == pytest.approx(micro, abs=1e-12)
    assert m["macro_f1"] == pytest.approx(per_label.mean(), abs=1e-12)
    report = per_label_report(y, pred, names, scores)
    np.testing.assert_allclose([r["f1"] for r in report], per_label, atol=1e-12)
    assert [r["support"] for r in report] == truth.sum(axis=0).tolist()
    top1 = apply_thresholds(scores, [1.0] * N_LABELS, always_top1=True)
    assert top1.dtype == np.int32 and (top1.sum(axis=1) == 1).all()


def test_threshold_sweeps_match_int64_counts(data):
    names, lists, truth, scores = data
    y = multi_hot(lists, names)
    grid = threshold_grid(0.05, 0.95, 0.05)
    best, curve = sweep_threshold(y, scores, grid, "micro_f1")
    expected = [_f1(truth, scores >= t)[1] for t in grid]
    np.testing.assert_allclose([row["micro_f1"] for row in curve], expected, atol=1e-12)
    assert best == grid[int(np.argmax(expected))]
    tuned = per_label_thresholds(y, scores, grid, fallback=best, min_positives=3)
    for i in (0, 127, 128, 159):  # both sides of the int8 wrap
        f1s = [_f1(truth[:, i : i + 1], scores[:, i : i + 1] >= t)[0][0] for t in grid]
        assert _f1(truth[:, i : i + 1], scores[:, i : i + 1] >= tuned[i])[0][0] == max(f1s)


def test_ranking_metrics_match_a_direct_count(data):
    names, lists, truth, scores = data
    r = ranking_metrics(multi_hot(lists, names), scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hits = np.take_along_axis(truth, top, axis=1)
    assert r["precision_at_1"] == pytest.approx(hits[:, 0].mean(), abs=1e-12)
    assert r["precision_at_5"] == pytest.approx(hits.sum(axis=1).mean() / 5, abs=1e-12)


def test_predict_split_returns_int32_labels(data):
    import tensorflow as tf

    from trainer.train import predict_split

    _, _, truth, _ = data

    def model(x, training=False):
        return tf.cast(x, tf.float32)

    ds = tf.data.Dataset.from_tensor_slices((truth.astype(np.float32), truth)).batch(64)
    y, s = predict_split(model, ds)
    assert y.dtype == np.int32 and s.shape == truth.shape
    np.testing.assert_array_equal(y.sum(axis=0), truth.sum(axis=0))


def test_tagger_predict_multi_hot_is_int32(data):
    from doctags_core.tagger import Tagger

    names, lists, truth, scores = data
    tagger = Tagger.__new__(Tagger)  # the decoding only; no SavedModel needed
    tagger.labels = names

    def raw(texts):  # each "text" is its row number
        rows = [int(t) for t in texts]
        tags = [[names[j].encode() for j in np.flatnonzero(truth[r])] for r in rows]
        width = max(len(t) for t in tags)
        return {
            "scores": scores[rows],
            "tags": np.array([t + [b""] * (width - len(t)) for t in tags], dtype=object),
        }

    tagger.raw = raw
    texts = [str(i) for i in range(N_DOCS)]
    decisions, got_scores = tagger.predict_multi_hot(texts, batch_size=256)
    assert decisions.dtype == np.int32
    np.testing.assert_array_equal(decisions, truth)
    np.testing.assert_array_equal(got_scores, scores)
