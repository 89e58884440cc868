"""What the export serves: one trained model, or the members of a selected ensemble.

A plain run trains one model into ``model/``. With ``model.family: auto``
the candidates train in ``model/candidates/NAME/`` and `trainer.selection`
writes ``model/selection.json``; its choice is one candidate or several,
whose scores the export averages with the chosen weights (one graph, one
set of thresholds). Each member keeps its own config (family, tokenizer),
saved beside its model, so its vectorizer is rebuilt exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from doctags_core.config import Config, load_config
from trainer.outputs import CONFIG_FILE, SELECTION_FILE, model_path
from trainer.sequence_length import fit_sequence_length


@dataclass(frozen=True)
class Member:
    """One model whose scores the export serves.

    Attributes:
        name: The candidate's name (or the family of a plain run).
        cfg: Its config: family, tokenizer and model directory.
        weight: Its share of the served scores (the weights sum to 1).
    """

    name: str
    cfg: Config
    weight: float


def read_selection(cfg: Config) -> dict | None:
    """``model/selection.json`` of an auto run, or None for a plain run."""
    path = model_path(cfg.model_dir, SELECTION_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def members_of(cfg: Config) -> list[Member]:
    """The models the export combines (a plain run: the one in ``model/``)."""
    selection = read_selection(cfg)
    if selection is None:
        return [Member(cfg.model.family, fit_sequence_length(cfg), 1.0)]
    return [
        Member(
            m["name"],
            load_config(os.path.join(m["model_dir"], CONFIG_FILE), check_inputs=False),
            float(m["weight"]),
        )
        for m in selection["chosen"]["members"]
    ]


def describe(members: list[Member]) -> str:
    """``cnn`` or ``ensemble(0.5 tfidf_mlp + 0.5 cnn)``, for metadata and logs."""
    if len(members) == 1:
        return members[0].cfg.model.family
    return "ensemble(" + " + ".join(f"{m.weight:g} {m.name}" for m in members) + ")"
