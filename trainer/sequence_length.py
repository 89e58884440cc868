"""Fits ``model.sequence_length`` to the corpus, so short texts stop paying for padding.

The sequence families read a fixed number of token ids per document; a
shorter document is padded to it. On a corpus of ~40-word texts with the
default 256, most of every convolution and embedding lookup runs on
padding: an epoch costs several times what the words need, and within
``training.budget_minutes`` the cnn stops before it has learned. Cutting
the length to what nearly every training document fits in keeps the words
and drops the padding. The train split's length percentile is computed by
the Beam job (``metadata.json``, ``train_token_lengths``), so the choice
never looks at the test split, and training and export read the same
number from the same file.
"""

from __future__ import annotations

import dataclasses
import logging

from doctags_core import data_files
from doctags_core.config import Config

log = logging.getLogger(__name__)

COVERAGE_PERCENTILE = "p99"
"""The train-split percentile of document length the fitted length covers."""

ROUND_TO = 8
"""The fitted length is rounded up to a multiple of this (tidy shapes, some slack)."""

MIN_LENGTH = 16
"""Never fitted below this: room for the widest convolution and a few of them."""


def fitted_length(configured: int, train_lengths: dict) -> int:
    """The configured length, or the train split's 99th percentile when that is shorter.

    Args:
        configured: ``model.sequence_length``, the most tokens ever read.
        train_lengths: ``train_token_lengths`` from ``metadata.json``
            (``{"documents": n, "p99": ...}``); empty for data made before
            the Beam job recorded it.

    Returns:
        The percentile rounded up to a multiple of `ROUND_TO`, at least
        `MIN_LENGTH`, at most ``configured``.
    """
    percentile = int(train_lengths.get(COVERAGE_PERCENTILE) or 0)
    if percentile <= 0:
        return configured
    rounded = -(-percentile // ROUND_TO) * ROUND_TO
    return min(configured, max(MIN_LENGTH, rounded))


def fit_sequence_length(cfg: Config) -> Config:
    """``cfg`` with ``model.sequence_length`` fitted to the data in ``cfg.data_dir``.

    Idempotent: a fitted config fits to itself, so the configs saved beside
    trained models can pass through again. Unchanged when
    ``model.fit_sequence_length`` is off, for the ``wordpiece`` tokenizer
    (the Beam job counts words, and a word is often several pieces), and
    for data without the train-split lengths.
    """
    model = cfg.model
    if not model.fit_sequence_length or model.tokenizer != "word":
        return cfg
    try:
        metadata = data_files.read_metadata(cfg.data_dir)
    except FileNotFoundError:
        return cfg
    length = fitted_length(model.sequence_length, metadata.get("train_token_lengths") or {})
    if length == model.sequence_length:
        return cfg
    log.info(
        "model.sequence_length %d -> %d: the train split's %s document length is %s tokens "
        "(model.fit_sequence_length)",
        model.sequence_length,
        length,
        COVERAGE_PERCENTILE,
        metadata["train_token_lengths"][COVERAGE_PERCENTILE],
    )
    return dataclasses.replace(cfg, model=dataclasses.replace(model, sequence_length=length))
