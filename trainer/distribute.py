"""Device setup and the choice of tf.distribute strategy."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from doctags_core.config import TrainingConfig


def configure_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (0 leaves it alone).

    This is how multi-device code paths are exercised on machines without
    GPUs. It must run before TensorFlow initialises its devices, so the CLI
    calls it first thing; calling it again with the same count is a no-op.

    Raises:
        RuntimeError: if TensorFlow already initialised a different layout.
    """
    if count <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"training.logical_cpu_devices={count} must be applied before TensorFlow "
            "initialises; start a fresh process (the doctags CLI does this first)"
        ) from e


def is_multi_worker() -> bool:
    """True when TF_CONFIG describes a cluster with more than one worker."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return False
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1


def make_strategy(cfg: TrainingConfig) -> tf.distribute.Strategy:
    """MirroredStrategy over the configured devices, all GPUs, or the CPU(s).

    With ``logical_cpu_devices`` > 1 and no GPU, the logical CPUs are the
    replicas, which is how the multi-replica path is tested here.

    Raises:
        NotImplementedError: for a multi-worker TF_CONFIG; Keras 3 model.fit
            fails under MultiWorkerMirroredStrategy (keras issue 20585), and
            the custom loop that replaces it is not in this release.
    """
    if is_multi_worker():
        raise NotImplementedError(
            "TF_CONFIG names several workers, but multi-worker training is not supported yet "
            "(Keras 3 model.fit fails under MultiWorkerMirroredStrategy, keras issue 20585)"
        )
    if cfg.devices:
        return tf.distribute.MirroredStrategy(devices=list(cfg.devices))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)
