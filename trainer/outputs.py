"""The model directory's layout: what training writes and export reads.

One place for the file names, so the export does not import the training
code for them.
"""

from __future__ import annotations

import os

from doctags_core import schema

MODEL_FILE = "model.keras"
THRESHOLDS_FILE = schema.THRESHOLDS_FILE
SUMMARY_FILE = "training_summary.json"
HISTORY_FILE = "history.csv"
WORDPIECE_VOCAB_FILE = "wordpiece_vocab.txt"
CONFIG_FILE = "config.yaml"
LOGS_DIR = "logs"
VALIDATION_SCORES_FILE = "validation_scores.npz"  # y and scores on validation, for selection
SELECTION_FILE = "selection.json"  # model.family auto: the candidates and the choice
CANDIDATES_DIR = "candidates"
REFIT_DIR = "refit"  # the winner's members trained again on train + validation


def model_path(model_dir: str, name: str) -> str:
    """A file of the model directory (one of the names above)."""
    return os.path.join(model_dir, name)
