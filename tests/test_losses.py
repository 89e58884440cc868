import numpy as np
import pytest
import tensorflow as tf

from doctags_core.config import LossConfig
from trainer.losses import (
    BalancedSampleWeights,
    WeightedBinaryCrossentropy,
    balanced_class_weights,
    make_loss,
    make_sample_weights,
    positive_weights,
    training_losses,
)

Y = np.array([[1, 0], [0, 0], [0, 1]], dtype="float32")
P = np.array([[0.6, 0.2], [0.3, 0.1], [0.2, 0.4]], dtype="float32")


def test_positive_weights_grow_for_rare_labels_and_are_capped():
    w = positive_weights([1000, 10, 1], 2000, LossConfig(pos_weight_power=1.0, pos_weight_cap=50))
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx(50.0)  # 199 capped at 50
    w = positive_weights([1000, 10], 2000, LossConfig(pos_weight_power=0.5, pos_weight_cap=50))
    assert w[1] == pytest.approx(np.sqrt(199), rel=1e-5)


def test_weighted_bce_equals_bce_with_unit_weights_and_weighs_positives():
    bce = make_loss(LossConfig(name="bce"), [1, 1], 3, reduction=None)
    unit = WeightedBinaryCrossentropy([1.0, 1.0], reduction=None)
    np.testing.assert_allclose(unit(Y, P), bce(Y, P), rtol=1e-4)
    heavy = WeightedBinaryCrossentropy([1.0, 5.0], reduction=None)(Y, P).numpy()
    base = unit(Y, P).numpy()
    assert heavy[0] == pytest.approx(base[0])  # label 1 negative only: unchanged
    assert heavy[2] > base[2]  # label 1 positive: weighted up


def test_focal_loss_discounts_easy_examples():
    focal = make_loss(LossConfig(name="focal", focal_gamma=2.0), [1, 1], 3, reduction=None)
    bce = make_loss(LossConfig(name="bce"), [1, 1], 3, reduction=None)
    assert (focal(Y, P).numpy() < bce(Y, P).numpy()).all()


# Sample weights. A train split of 8 documents over 3 labels, counts [4, 2, 1]:
# sklearn-balanced class weights 8 / (3 * count) = [2/3, 4/3, 8/3].
TRAIN = np.array(
    [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]],
    dtype="float32",
)
COUNTS = [4, 2, 1]


def _fit(cap=None, train=TRAIN, counts=COUNTS):
    batches = [tf.constant(train[:5]), tf.constant(train[5:])]  # two batches, as a pass gives
    return BalancedSampleWeights.fit(counts, len(train), batches, cap)


def test_balanced_sample_weights_by_hand_and_mean_one_over_train():
    np.testing.assert_allclose(balanced_class_weights(COUNTS, 8), [2 / 3, 4 / 3, 8 / 3], rtol=1e-6)
    # unnormalised: 2/3 x3, (2/3 + 4/3)/2 = 1, 4/3, 8/3, 1 x2 (no labels): sum 9, mean 9/8
    weights = _fit()
    assert weights.scale == pytest.approx(8 / 9)
    batch = tf.constant([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], tf.float32)
    expected = np.array([2 / 3, 1.0, 8 / 3, 1.0]) * 8 / 9
    np.testing.assert_allclose(weights(batch).numpy(), expected, rtol=1e-6)
    assert float(tf.reduce_mean(weights(tf.constant(TRAIN)))) == pytest.approx(1.0, rel=1e-6)
    assert weights.summary()["mean"] == pytest.approx(1.0)
    assert weights.summary()["train_examples"] == 8


def test_capped_sample_weights_still_average_one():
    # Scaled by 8/9 the label-2 example would weigh 64/27 > 2: it is clipped to 2 and the
    # others scaled up so the mean stays 1: s * (9 - 8/3) + 2 = 8, s = 18/19.
    weights = _fit(cap=2.0)
    assert weights.scale == pytest.approx(18 / 19)
    w = weights(tf.constant(TRAIN)).numpy()
    assert w.max() == pytest.approx(2.0)
    assert w.mean() == pytest.approx(1.0, rel=1e-6)
    assert weights.summary()["clipped_share"] == pytest.approx(1 / 8)
    assert _fit(cap=30.0).scale == pytest.approx(8 / 9)  # a cap that does not bind


def test_equal_sample_weights_leave_the_training_loss_unchanged():
    bce = make_loss(LossConfig(name="bce"), [3, 3], 3, reduction=None)
    y = np.array([[1, 1], [1, 1], [1, 1]], dtype="float32")
    p = np.array([[0.6, 0.2], [0.3, 0.9], [0.5, 0.4]], dtype="float32")
    # every example weighs 2 / (2 * 3) = 1/3 before normalisation, 1 after
    equal = _fit(train=y, counts=[3, 3])
    plain = tf.nn.compute_average_loss(training_losses(bce, y, p), global_batch_size=4)
    weighted = tf.nn.compute_average_loss(training_losses(bce, y, p, equal), global_batch_size=4)
    assert float(weighted) == pytest.approx(float(plain), rel=1e-6)
    # unequal weights: each example's loss times its weight, still divided by the batch size
    skewed = _fit()
    y3, p3 = TRAIN[[0, 2, 5]], np.array([[0.6, 0.2, 0.1], [0.3, 0.9, 0.2], [0.5, 0.4, 0.3]])
    p3 = p3.astype("float32")
    got = tf.nn.compute_average_loss(training_losses(bce, y3, p3, skewed), global_batch_size=4)
    expected = (bce(y3, p3).numpy() * np.array([2 / 3, 1.0, 8 / 3]) * 8 / 9).sum() / 4
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert abs(float(got) - float(tf.reduce_sum(bce(y3, p3))) / 4) > 1e-3


def test_no_sample_weights_by_default():
    assert make_sample_weights(LossConfig(), [1], 1, lambda: pytest.fail("no pass needed")) is None
    made = make_sample_weights(
        LossConfig(sample_weights="balanced", sample_weight_cap=None), COUNTS, 8, lambda: [TRAIN]
    )
    assert made.scale == pytest.approx(8 / 9) and made.cap is None
