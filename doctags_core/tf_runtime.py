"""TensorFlow for the Beam workers: imported without Keras, thread pools tuned.

``import tensorflow`` ends by importing ``keras.src.optimizers`` (so that
Keras optimizers register with the SavedModel machinery; see the end of
``tensorflow/__init__.py``). That pulls in all of Keras and, through Keras'
scikit-learn wrapper, scikit-learn: about 40% of TensorFlow's import time
(1.7 s of 4.0 s on the 2-core development machine), paid by every worker
process and by every small job. The Beam workers never build, load or save
a Keras object, so they skip it: while TensorFlow imports,
``keras.src.optimizers`` is marked absent in ``sys.modules``, TensorFlow
catches the ``ImportError`` as it does when Keras is not installed, and the
mark is removed at once, so that a later ``import keras`` in the same
process imports Keras in full.

A worker that imports TensorFlow itself also tunes its thread pools for the
job's work: several batches at once (``preprocess.encode_threads``), each a
graph of small single-threaded string kernels, next to the Python thread
that reads and writes. TensorFlow's defaults (intra-op pools as wide as the
machine, idle threads spinning before they sleep) burn the cores those need:
one intra-op thread and no spinning were ~6-15% faster at 100k and 1M
documents on 2 cores. A process that imported TensorFlow before (the CLI's
``doctags run`` and ``train`` do, first thing; tests do) keeps its own
settings, so training in the same process is never slowed.
"""

from __future__ import annotations

import sys

_SKIPPED_MODULE = "keras.src.optimizers"


def import_tensorflow():
    """Imports TensorFlow (or returns it if already imported), Keras left out.

    Call it before anything else imports TensorFlow in a worker; afterwards
    it is a plain ``import tensorflow``.
    """
    if "tensorflow" in sys.modules or _SKIPPED_MODULE in sys.modules:
        import tensorflow as tf

        return tf
    sys.modules[_SKIPPED_MODULE] = None  # ``import`` of a None entry raises ImportError
    try:
        import tensorflow as tf
    finally:
        if sys.modules.get(_SKIPPED_MODULE, "") is None:
            del sys.modules[_SKIPPED_MODULE]
    _tune_thread_pools(tf)
    return tf


def _tune_thread_pools(tf) -> None:
    """One intra-op thread and no idle spinning, before TensorFlow initialises."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        from tensorflow.python.eager import context

        # No public API sets this ConfigProto field in TF2; the eager context
        # reads its ``_config`` when it initialises (TF 2.21).
        config = tf.compat.v1.ConfigProto()
        config.experimental.disable_thread_spinning = True
        context.context()._config = config
    except (RuntimeError, ImportError, AttributeError):  # already initialised, or TF changed
        pass
