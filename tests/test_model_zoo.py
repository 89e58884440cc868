"""Every model family builds, trains a step, saves/loads, and serves raw strings."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from doctags_core.config import ModelConfig
from doctags_core.families import input_kind
from trainer import models


def _ids(batch=4, length=12, vocab=30):
    rng = np.random.default_rng(0)
    ids = rng.integers(2, vocab, size=(batch, length))
    ids[:, length // 2 :] = 0  # padding at the end, as TextVectorization gives
    return ids


@pytest.mark.parametrize("family", sorted(models.BUILDERS))
def test_family_trains_and_round_trips(family, tmp_path):
    cfg = ModelConfig(
        family=family,
        sequence_length=12,
        embedding_dim=8,
        hidden_units=8,
        conv_filters=4,
        kernel_sizes=(2, 3),
        rnn_units=4,
        transformer_layers=1,
        transformer_heads=2,
        transformer_ff_dim=8,
    )
    vocab, labels = 30, 3
    model = models.build_model(cfg, vocab, labels, label_priors=[0.5, 0.1, 0.01])
    if input_kind(family) == "tf_idf":
        x = np.random.default_rng(1).random((4, vocab)).astype("float32")
    else:
        x = _ids()
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype="float32")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    before = model.predict(x, verbose=0)
    # priors set the starting biases: scores begin near each label's base rate
    assert before[:, 0].mean() > before[:, 2].mean()
    model.fit(x, y, epochs=2, verbose=0)
    after = model.predict(x, verbose=0)
    assert after.shape == (4, 3) and not np.allclose(before, after)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), after, rtol=1e-5, atol=1e-6)


def test_attention_pooling_ignores_padding():
    layer = models.AttentionPooling(4)
    x = tf.random.normal((2, 5, 3))
    mask = tf.constant([[True, True, False, False, False]] * 2)
    pooled = layer(x, mask=mask)
    changed = tf.concat([x[:, :2], tf.random.normal((2, 3, 3)) * 100], axis=1)
    np.testing.assert_allclose(pooled, layer(changed, mask=mask), rtol=1e-5, atol=1e-5)
