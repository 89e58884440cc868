"""Model families; each ends in one sigmoid per label.

Sequence families (dnn, cnn, bigru, transformer) take int token ids of
shape ``[batch, sequence_length]``; ``tfidf_mlp`` takes the TF-IDF vector of
the same TextVectorization vocabulary (`doctags_core.families` names the
families and what each reads). All return per-label probabilities, so the
export wraps any family the same way.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

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
    # float32 even under a mixed_float16 policy: sigmoid and the loss need
    # the range, and the scores leave the model as float32.
    return keras.layers.Dense(
        num_labels,
        activation="sigmoid",
        bias_initializer=initializer,
        name="scores",
        dtype="float32",
    )


def _head(inputs, x, cfg: ModelConfig, num_labels: int, label_priors, name: str):
    """The common end of every family: dropout, then one sigmoid score per label."""
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(inputs, _scores_layer(num_labels, label_priors)(x), name=name)


def build_dnn(cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None) -> keras.Model:
    """The seed recipe: Embedding -> GlobalMaxPool -> Dense -> Dropout -> sigmoid."""
    ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")(ids)
    x = keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu", name="hidden")(x)
    return _head(ids, x, cfg, num_labels, label_priors, "dnn")


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


@keras.saving.register_keras_serializable(package="doctags")
class AttentionPooling(keras.layers.Layer):
    """Attention-weighted average over time, padding masked out.

    A learned query scores each position (tanh projection, then a dot
    product), softmax over the unmasked positions turns scores into weights:
    the pooling of Yang et al. (2016), which lets a long document be
    summarised by the few passages that carry its topics.
    """

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.project = keras.layers.Dense(units, activation="tanh", name="project")
        self.query = keras.layers.Dense(1, use_bias=False, name="query")
        self.softmax = keras.layers.Softmax(axis=1)
        self.supports_masking = True

    def build(self, input_shape):
        # Explicit, so a loaded model creates the weights before restoring them.
        self.project.build(input_shape)
        self.query.build((*input_shape[:-1], self.units))
        super().build(input_shape)

    def call(self, x, mask=None):
        logits = self.query(self.project(x))
        weights = self.softmax(logits, mask=None if mask is None else ops.expand_dims(mask, -1))
        return ops.sum(weights * x, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="doctags")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding; id 0 (padding) is masked."""

    def __init__(self, vocab_size: int, sequence_length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.sequence_length, self.dim = vocab_size, sequence_length, dim
        self.tokens = keras.layers.Embedding(vocab_size, dim, name="tokens")
        self.positions = keras.layers.Embedding(sequence_length, dim, name="positions")

    def build(self, input_shape):
        self.tokens.build(input_shape)
        self.positions.build((self.sequence_length,))
        super().build(input_shape)

    def call(self, ids):
        positions = ops.arange(0, ops.shape(ids)[-1], dtype="int32")
        return self.tokens(ids) + self.positions(positions)[None]

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "dim": self.dim,
        }


@keras.saving.register_keras_serializable(package="doctags")
class TransformerEncoderBlock(keras.layers.Layer):
    """Post-norm Transformer encoder block (self-attention, then feed-forward)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.ff_dim, self.dropout_rate = dim, heads, ff_dim, dropout
        self.attention = keras.layers.MultiHeadAttention(
            heads, key_dim=max(dim // heads, 1), dropout=dropout, name="attention"
        )
        self.ff_in = keras.layers.Dense(ff_dim, activation="gelu", name="ff_in")
        self.ff_out = keras.layers.Dense(dim, name="ff_out")
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm2")
        self.drop = keras.layers.Dropout(dropout)
        self.supports_masking = True

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.ff_dim))
        self.norm1.build(input_shape)
        self.norm2.build(input_shape)
        super().build(input_shape)

    def call(self, x, mask=None, training=None):
        attention_mask = None if mask is None else ops.expand_dims(mask, 1)
        attended = self.attention(x, x, attention_mask=attention_mask, training=training)
        x = self.norm1(x + self.drop(attended, training=training))
        ff = self.ff_out(self.ff_in(x))
        return self.norm2(x + self.drop(ff, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout_rate,
        }


def build_bigru(
    cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None
) -> keras.Model:
    """BiGRU over masked embeddings, attention pooling, sigmoid outputs."""
    ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(ids)
    x = keras.layers.SpatialDropout1D(cfg.dropout / 2, name="embedding_dropout")(x)
    x = keras.layers.Bidirectional(
        keras.layers.GRU(cfg.rnn_units, return_sequences=True), name="bigru"
    )(x)
    x = AttentionPooling(cfg.rnn_units, name="attention_pool")(x)
    return _head(ids, x, cfg, num_labels, label_priors, "bigru")


def build_transformer(
    cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None
) -> keras.Model:
    """A small Transformer encoder with attention pooling (trained from scratch)."""
    ids = keras.Input(shape=(cfg.sequence_length,), dtype="int64", name="token_ids")
    x = PositionalEmbedding(vocab_size, cfg.sequence_length, cfg.embedding_dim, name="embed")(ids)
    x = keras.layers.Dropout(cfg.dropout / 2, name="embedding_dropout")(x)
    for i in range(cfg.transformer_layers):
        x = TransformerEncoderBlock(
            cfg.embedding_dim,
            cfg.transformer_heads,
            cfg.transformer_ff_dim,
            cfg.dropout / 2,
            name=f"encoder{i}",
        )(x)
    x = AttentionPooling(cfg.embedding_dim, name="attention_pool")(x)
    return _head(ids, x, cfg, num_labels, label_priors, "transformer")


def build_tfidf_mlp(
    cfg: ModelConfig, vocab_size: int, num_labels: int, label_priors=None
) -> keras.Model:
    """Bag-of-words MLP over TF-IDF vectors (IDF from the Beam document counts)."""
    tfidf = keras.Input(shape=(vocab_size,), dtype="float32", name="tf_idf")
    x = keras.layers.Dropout(cfg.dropout / 2, name="input_dropout")(tfidf)
    x = keras.layers.Dense(cfg.hidden_units, activation="relu", name="hidden")(x)
    return _head(tfidf, x, cfg, num_labels, label_priors, "tfidf_mlp")


# One builder per family of `doctags_core.families.FAMILIES` (a test ties the two).
BUILDERS = {
    "dnn": build_dnn,
    "cnn": build_cnn,
    "bigru": build_bigru,
    "transformer": build_transformer,
    "tfidf_mlp": build_tfidf_mlp,
}


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
