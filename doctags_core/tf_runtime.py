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

A process that only preprocesses also tunes TensorFlow's thread pools for
the job's work: several batches at once (``preprocess.encode_threads``), each
a graph of small single-threaded string kernels, next to the Python thread
that reads and writes. TensorFlow's defaults (intra-op pools as wide as the
machine, idle threads spinning before they sleep) burn the cores those need:
one intra-op thread and no spinning were ~6-15% faster at 100k and 1M
documents on 2 cores. The settings last as long as the process, so they are
applied only where nothing else will run TensorFlow: a Beam SDK worker
process (``sdk_worker_main``: Dataflow, Flink, the DirectRunner's
``multi_processing`` mode) and the ``doctags preprocess`` command
(`dedicate_process_to_preprocessing`). A program that calls the Beam job
in-process and trains afterwards (``doctags run``, a notebook, the quality
bench) keeps TensorFlow's defaults: the quality bench, which preprocessed
in its own process first, trained on one intra-op thread at about half
speed until this was made opt-in.
"""

from __future__ import annotations

import sys

_SKIPPED_MODULE = "keras.src.optimizers"
_SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
_dedicated_to_preprocessing = False


def dedicate_process_to_preprocessing() -> None:
    """Declares that this process will run no TensorFlow but the Beam job's.

    Called by ``doctags preprocess`` before the job starts, so that the
    in-process DirectRunner's worker tunes TensorFlow's thread pools for the
    job (see the module docstring); nothing else may call it.
    """
    global _dedicated_to_preprocessing
    _dedicated_to_preprocessing = True


def _in_sdk_worker_process() -> bool:
    """Whether this process is a Beam SDK worker (``python -m ...sdk_worker_main``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == _SDK_WORKER_MAIN


def tunes_thread_pools() -> bool:
    """Whether `import_tensorflow` would tune the thread pools in this process."""
    return _dedicated_to_preprocessing or _in_sdk_worker_process()


def import_tensorflow():
    """Imports TensorFlow (or returns it if already imported), Keras left out.

    Call it before anything else imports TensorFlow in a worker; afterwards
    it is a plain ``import tensorflow``. The thread pools are tuned only in
    a process dedicated to preprocessing (`tunes_thread_pools`).
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
    if tunes_thread_pools():
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
