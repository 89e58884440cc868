"""FusedAdam is Keras' Adam: same updates (to rounding), same slots, same checkpoints."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer.fused_adam import FusedAdam


def _gradients(steps: int, shape, seed: int = 0) -> list[np.ndarray]:
    """Gradients of very different sizes, so the bias correction and epsilon matter."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-6, 1, size=steps)
    return [(rng.standard_normal(shape) * s).astype(np.float32) for s in scales]


def _run(optimizer, initial: np.ndarray, gradients, sparse_rows=None) -> np.ndarray:
    variable = keras.Variable(initial)
    optimizer.build([variable])

    @tf.function
    def apply(gradient):
        if sparse_rows is not None:  # what an embedding lookup's gradient looks like
            gradient = tf.IndexedSlices(
                tf.gather(gradient, sparse_rows), sparse_rows, tf.shape(gradient, tf.int64)
            )
        optimizer.apply_gradients([(gradient, variable)])

    for g in gradients:
        apply(tf.constant(g))
    return variable.numpy()


def test_dense_updates_match_keras_adam():
    initial = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    grads = _gradients(30, initial.shape)
    expected = _run(keras.optimizers.Adam(0.01), initial, grads)
    got = _run(FusedAdam(0.01), initial, grads)
    assert not np.allclose(got, initial, atol=0.05)  # it did move
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_sparse_gradients_are_summed_per_row_before_the_update():
    """An embedding's gradient (slices, a row repeated) updates as its dense sum.

    That is Adam's definition. Keras 3.15's own update differs on repeated
    rows: it squares each slice before the slices of a row are summed, so
    its velocity gets ``sum(g_i^2)`` instead of ``(sum g_i)^2``.
    """
    initial = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    grads = _gradients(20, initial.shape, seed=3)
    rows = tf.constant([1, 5, 5, 17], tf.int64)
    summed = [
        tf.convert_to_tensor(
            tf.IndexedSlices(tf.gather(g, rows), rows, tf.constant(g.shape, tf.int64))
        ).numpy()
        for g in grads
    ]
    expected = _run(keras.optimizers.Adam(0.01), initial, summed)
    got = _run(FusedAdam(0.01), initial, grads, rows)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[5], initial[5], atol=0.05)  # the repeated row moved
    np.testing.assert_array_equal(got[0], initial[0])  # a row never looked up did not


def test_amsgrad_falls_back_to_keras_update():
    initial = np.ones((6, 3), np.float32)
    grads = _gradients(10, initial.shape, seed=4)
    expected = _run(keras.optimizers.Adam(0.01, amsgrad=True), initial, grads)
    got = _run(FusedAdam(0.01, amsgrad=True), initial, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_keras_adam_checkpoint_resumes_in_fused_adam(tmp_path):
    """Same slot variables: training resumes from either optimizer's checkpoint."""
    initial = np.random.default_rng(5).standard_normal((12, 3)).astype(np.float32)
    grads = _gradients(16, initial.shape, seed=6)
    straight = _run(keras.optimizers.Adam(0.01), initial, grads)

    variable = keras.Variable(initial)
    first = keras.optimizers.Adam(0.01)
    first.build([variable])
    for g in grads[:8]:
        first.apply_gradients([(tf.constant(g), variable)])
    path = tf.train.Checkpoint(v=variable, opt=first).write(str(tmp_path / "ckpt"))

    resumed = keras.Variable(np.zeros_like(initial))
    second = FusedAdam(0.01)
    second.build([resumed])
    tf.train.Checkpoint(v=resumed, opt=second).read(path).assert_consumed()
    assert int(second.iterations.numpy()) == 8
    for g in grads[8:]:
        second.apply_gradients([(tf.constant(g), resumed)])
    np.testing.assert_allclose(resumed.numpy(), straight, rtol=1e-5, atol=1e-6)
