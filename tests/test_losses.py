import numpy as np
import pytest

from doctags_core.config import LossConfig
from trainer.losses import WeightedBinaryCrossentropy, make_loss, positive_weights

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
