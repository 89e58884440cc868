"""Model families over token ids; each ends in one sigmoid per label.

Every builder takes int token ids of shape ``[batch, sequence_length]``
(from the shared TextVectorization) and returns per-label probabilities, so
the export wraps any family the same way.
"""

from __future__ import annotations

import keras
import numpy as np

from doctags_core.config import ModelConfig


def _scores_layer(num_labels: int, label_priors) -> keras.layers.Dense:
    """The sigmoid output, its bias started at each label's log-odds prior.

    With rare labels, a zero bias starts every score at 0.5 and the first
    epochs are spent learning "almost always no"; starting from the prior
    skips that (the usual initialisation for imbalanced sigmoid outputs).
    """
    initializer = "zeros"
    if label_priors is not None:
        p = np.clip(np.asarray(label_priors, dtype="float64"), 1e-6, 1 - 1e-6)
        initializer = keras.initializers.Constant(np.log(p / (1 - p)))
    return keras.layers.Dense(
        num_labels, activation="sigmoid", bias_initializer=initializer, name="scores"
    )


def build_dnn(cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None) -> keras.Model:
    """The seed recipe: Embedding -> GlobalMaxPool -> Dense -> Dropout -> sigmoid."""
    ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")(ids)
    x = keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    scores = _scores_layer(num_labels, label_priors)(x)
    return keras.Model(ids, scores, name="dnn")


def build_cnn(cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None) -> keras.Model:
    """Kim-style CNN: parallel convolutions of several widths, max over time."""
    ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")(ids)
    x = keras.layers.SpatialDropout1D(cfg.dropout / 2, name="embedding_dropout")(x)
    pooled = []
    for width in cfg.kernel_sizes:
        conv = keras.layers.Conv1D(
            cfg.conv_filters, width, activation="relu", padding="same", name=f"conv{width}"
        )(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_pool{width}")(conv))
    x = keras.layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(cfg.dropout, name="hidden_dropout")(x)
    scores = _scores_layer(num_labels, label_priors)(x)
    return keras.Model(ids, scores, name="cnn")


BUILDERS = {"dnn": build_dnn, "cnn": build_cnn}


def build_model(
    cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None
) -> keras.Model:
    """Builds the configured family (``model.family``).

    Args:
        cfg: Model settings.
        vocab_size: Rows of the embedding (vocabulary plus padding and OOV).
        num_labels: Output columns.
        label_priors: Optional share of training documents carrying each
            label, used to initialise the output biases.
    """
    return BUILDERS[cfg.family](cfg, vocab_size, num_labels, label_priors)
