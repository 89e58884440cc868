"""Resumable training state: what is saved, where, and by whom.

A run killed at any moment (SIGKILL, preemption, a lost node) and started
again with the same command resumes from the last checkpoint and reaches
the result it would have reached. That needs, in one atomic checkpoint:
the weights (and the dropout seed state), the optimizer slots and loss
scale, the epoch, the step within the epoch (the data position: each
epoch's order is a pure function of the seed and the epoch, so ``skip``
finds the next batch), the running training metrics of the unfinished
epoch, and the early-stopping state with the best weights.

Under MultiWorkerMirroredStrategy every worker must take part in a save,
but only the chief's lands in the shared directory; the others write to a
local temporary directory that is removed straight after, as TensorFlow
requires. All workers restore from the chief's directory.

A checkpoint belongs to one config: its directory is named after a hash of
the resolved config, and the chief discards the directories of other
configs instead of resuming a different run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile

import tensorflow as tf

from doctags_core.atomic_files import atomic_write
from doctags_core.config import Config, config_to_yaml
from trainer.tf_config import ClusterRole

log = logging.getLogger(__name__)

BACKUP_DIR = "backup"
CONFIG_STAMP = "config.yaml"


class TrainState(tf.Module):
    """Loop counters and early-stopping state, saved with the weights.

    Attributes:
        epoch: Epochs completed.
        step: Batches completed in the current epoch (the data position).
        best: Best value of the monitored metric so far.
        best_epoch: Epoch (0-based) of ``best``; -1 before the first epoch.
        wait: Early-stopping counter, as `keras.callbacks.EarlyStopping`.
        stopped: Early stopping fired; nothing is left to train.
        global_batch: The global batch the data position counts in.
        input_shards: The input shards the epoch's data is cut into
            (`trainer.sharding`): with the global batch, what a step means.
        history: JSON list of the finished epochs' metrics.
    """

    def __init__(self, initial_best: float, global_batch: int, input_shards: int = 1):
        super().__init__(name="train_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.best = tf.Variable(initial_best, dtype=tf.float64, trainable=False, name="best")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.stopped = tf.Variable(False, trainable=False, name="stopped")
        self.global_batch = tf.Variable(
            global_batch, dtype=tf.int64, trainable=False, name="global_batch"
        )
        self.input_shards = tf.Variable(
            input_shards, dtype=tf.int64, trainable=False, name="input_shards"
        )
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")


def config_digest(cfg: Config) -> str:
    """Short hash of the resolved config; names the checkpoint directory."""
    return hashlib.sha256(config_to_yaml(cfg).encode("utf-8")).hexdigest()[:16]


def backup_directory(cfg: Config) -> str:
    """Where this config's resumable checkpoints live (shared by all workers)."""
    return os.path.join(cfg.model_dir, BACKUP_DIR, config_digest(cfg))


class Backup:
    """Saves and restores one `tf.train.Checkpoint` with a worker's role in mind.

    Args:
        cfg: The run's config (names the directory).
        role: This process's place in the cluster.
        max_to_keep: Checkpoints kept by the chief.
        **objects: Trackables to save (model, optimizer, state, ...).
    """

    def __init__(self, cfg: Config, role: ClusterRole, max_to_keep: int = 2, **objects):
        self.directory = backup_directory(cfg)
        self.role = role
        self.checkpoint = tf.train.Checkpoint(**objects)
        if role.is_chief:
            self._discard_other_configs(cfg)
            tf.io.gfile.makedirs(self.directory)
            atomic_write(os.path.join(self.directory, CONFIG_STAMP), config_to_yaml(cfg))
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.directory, max_to_keep=max_to_keep
            )

    def _discard_other_configs(self, cfg: Config) -> None:
        parent = os.path.dirname(self.directory)
        if not tf.io.gfile.isdir(parent):
            return
        for name in tf.io.gfile.listdir(parent):
            path = os.path.join(parent, name.rstrip("/"))
            if path != self.directory:
                log.warning("discarding %s: it belongs to a run with another config", path)
                tf.io.gfile.rmtree(path)

    def restore(self) -> str | None:
        """Restores the latest checkpoint of this config; its path, or None."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self, step: int) -> None:
        """Saves on every worker; only the chief's copy is kept.

        Args:
            step: The optimizer step, used to number the chief's checkpoints.
        """
        if self.role.is_chief:
            self.manager.save(checkpoint_number=step)
            return
        scratch = tempfile.mkdtemp(prefix=f"doctags-worker{self.role.task_index}-ckpt-")
        try:
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("worker %d: checkpoint written to %s, removed", self.role.task_index, scratch)

    def remove(self) -> None:
        """Deletes this config's checkpoints (the chief, after a finished run)."""
        if self.role.is_chief and tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)


def read_position(cfg: Config) -> tuple[int, int] | None:
    """``(epoch, step)`` of the latest checkpoint of ``cfg``, or None.

    For logs and tests: reads the checkpoint file, builds no model.
    """
    latest = tf.train.latest_checkpoint(backup_directory(cfg))
    if latest is None:
        return None
    reader = tf.train.load_checkpoint(latest)
    key = "state/{}/.ATTRIBUTES/VARIABLE_VALUE"
    return int(reader.get_tensor(key.format("epoch"))), int(reader.get_tensor(key.format("step")))
