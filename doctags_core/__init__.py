"""Shared core of doctags: config, text cleaning, record schema, labels, metrics.

Importing it turns on TensorFlow's oneDNN kernels for the process
(``TF_ENABLE_ONEDNN_OPTS=1``) unless the variable is already set, so it must
run before ``import tensorflow``; every doctags entry point and the
``trainer`` package import it first. TensorFlow turns oneDNN on by itself
only on CPUs with AVX-512 class features; on the 2-core AVX2 development
machine it was off, and a training step under ``tf.distribute`` (which
every doctags layout uses, one device included) ran on Eigen kernels that
allocate and zero fresh memory each step: the Reuters ``cnn`` took 33 s an
epoch with Eigen and 19.5 s with oneDNN, the ``tfidf_mlp`` 4.3 s and 2.2 s
(2026-12-06, bench/research/FINDINGS.md 5e). oneDNN may round differently
in the last bits, which TensorFlow states when it starts; set the variable
to 0 to keep Eigen.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
