"""The model families: one registry for the config, the trainer and the docs.

Each family is named once here with what it reads from the shared
vectorizer and a one-line description. Config validation and the config
reference read this registry, and `trainer.models` builds one network per
entry (a test checks the two name the same families), so a family cannot
exist in one place and be unknown in another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: The value of ``model.family``.
        input_kind: ``ids`` (token ids, ``[batch, sequence_length]``) or
            ``tf_idf`` (a TF-IDF vector over the vocabulary).
        description: What the network is, for the config reference.
    """

    name: str
    input_kind: str
    description: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("dnn", "ids", "the seed recipe: embedding, max pooling, one dense layer"),
        Family("cnn", "ids", "Kim-style CNN: parallel convolutions of several widths"),
        Family("bigru", "ids", "bidirectional GRU with attention pooling"),
        Family("transformer", "ids", "small Transformer encoder with attention pooling"),
        Family("tfidf_mlp", "tf_idf", "TF-IDF bag of words (IDF from the Beam counts) and an MLP"),
    )
}


def input_kind(family: str) -> str:
    """What ``family`` reads from the vectorizer: ``ids`` or ``tf_idf``."""
    return FAMILIES[family].input_kind
