"""What a training run tells people: TensorBoard scalars, history.csv, progress.

Only the chief writes (TensorBoard logs, ``history.csv``) and prints; the
other workers of a multi-worker run log their epoch lines instead. At a
terminal the chief draws a step progress bar; logs and CI (no TTY) get one
line per epoch, because a bar redrawn into a log file is noise.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys

import keras
import tensorflow as tf

from doctags_core.atomic_files import atomic_write
from trainer.outputs import HISTORY_FILE, LOGS_DIR
from trainer.tf_config import ClusterRole

log = logging.getLogger(__name__)

METRIC_NAMES = ("loss", "pr_auc", "roc_auc")


def write_history(path: str, history: list[dict]) -> None:
    """history.csv: one row per finished epoch, the columns Keras' CSVLogger wrote."""
    keys = sorted(history[0]) if history else []
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["epoch", *keys])
    for epoch, row in enumerate(history):
        writer.writerow([epoch, *(row[k] for k in keys)])
    atomic_write(path, text.getvalue())  # rewritten every epoch: never half a file


class Reporter:
    """TensorBoard, history and progress for one training run.

    Args:
        model_dir: Where the chief writes ``logs/`` and ``history.csv``.
        role: This process's place in the cluster.
        epochs: The configured maximum, for "epoch 3/15".
    """

    def __init__(self, model_dir: str, role: ClusterRole, epochs: int):
        self.model_dir, self.role, self.epochs = model_dir, role, epochs
        self.steps_per_epoch: int | None = None  # known once an epoch has run
        if role.is_chief:
            logs = os.path.join(model_dir, LOGS_DIR)
            self._writers = {
                "train": tf.summary.create_file_writer(os.path.join(logs, "train")),
                "validation": tf.summary.create_file_writer(os.path.join(logs, "validation")),
            }
        else:
            self._writers = {k: tf.summary.create_noop_writer() for k in ("train", "validation")}

    def resuming(self, epoch: int, step: int) -> None:
        if self.role.is_chief:
            print(f"resuming at epoch {epoch + 1}, step {step}", flush=True)

    def progress_bar(self, epoch: int, start: int):
        """A step progress bar for a person at a terminal (chief only), or None."""
        if not (self.role.is_chief and sys.stdout.isatty()):
            return None
        print(f"epoch {epoch + 1}/{self.epochs}", flush=True)
        bar = keras.utils.Progbar(self.steps_per_epoch, unit_name="step")
        if start:
            bar.update(start)
        return bar

    @staticmethod
    def finish_bar(bar) -> None:
        if bar is not None and bar.target is None:
            print(flush=True)  # a bar without a known end does not finish its line

    def end_epoch(
        self, epoch: int, logs: dict, history: list[dict], seconds: float, steps: int, best: bool
    ) -> None:
        """TensorBoard scalars, the rewritten history.csv and the epoch line."""
        self._write_summaries(epoch, logs)
        if self.role.is_chief:  # rewritten whole, so a resumed run's file has no duplicates
            write_history(os.path.join(self.model_dir, HISTORY_FILE), history)
        line = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        mark = " (best)" if best else ""
        message = f"epoch {epoch + 1}/{self.epochs} - {steps} steps - {seconds:.1f}s - {line}{mark}"
        if self.role.is_chief:
            print(message, flush=True)
        else:
            log.info("worker %d: %s", self.role.task_index, message)

    def _write_summaries(self, epoch: int, logs: dict) -> None:
        with self._writers["train"].as_default():
            for k in METRIC_NAMES:
                tf.summary.scalar(f"epoch_{k}", logs[k], step=epoch)
        with self._writers["validation"].as_default():
            for k in METRIC_NAMES:
                tf.summary.scalar(f"epoch_{k}", logs[f"val_{k}"], step=epoch)
        for writer in self._writers.values():
            writer.flush()
