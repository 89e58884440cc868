"""Keras' Adam, with each variable's update done by TensorFlow's fused kernel.

Keras 3 writes Adam's update as separate tensor ops (two slot updates, a
square root, a division, an assignment), each a full pass over the variable
with its own temporaries. For the models here the update, not the forward or
backward pass, is most of a step: the ``tfidf_mlp``'s first layer alone has
``vocab_size x hidden_units`` weights (10M for 20k words and 512 units), and
every step updates all of them. ``ResourceApplyAdam`` does the same update in
one multi-threaded pass. On this 2-core machine a ``tfidf_mlp``-shaped step
(batch 64, 20k inputs, 512 hidden, 588 labels) took 92-99 ms instead of
247-257; in the real loop on debtags a ``tfidf_mlp`` epoch took 25-31 s
instead of 50-59 and a ``cnn`` epoch 62-69 s instead of 71-74
(`bench/research/FINDINGS.md`, section 5d).

It is the same algorithm, term for term: the kernel computes
``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)`` and
``var -= m * alpha / (sqrt(v) + epsilon)`` with
``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``, as
``keras.optimizers.Adam.update_step`` does, on the same slot variables, so
checkpoints of either load into the other. Results agree to rounding, not
bit for bit (rounding differs inside the kernel). One difference is not
rounding: for an embedding's gradient (slices, with a row repeated when a
word occurs twice in a batch) Keras 3.15 squares each slice before the
slices of a row are summed, so its velocity gets ``sum(g_i^2)`` where Adam
has ``(sum g_i)^2``; here the slices are summed first, as Adam defines.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose dense updates run ``ResourceApplyAdam``.

    Falls back to Keras' own update for ``amsgrad`` (the kernel has no max of
    past velocities); the trainer runs Keras on TensorFlow only. Sparse
    gradients (``tf.IndexedSlices`` from an embedding lookup) are made dense
    first, summing a repeated row's slices (see the module docstring for how
    Keras' own update differs there).
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
        )


def _handle(variable):
    """The resource handle of a Keras or TF variable.

    Under a `tf.distribute` strategy the update runs once per replica, inside
    ``strategy.extended.update``, where a mirrored variable's ``handle`` is
    that replica's copy.
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle
