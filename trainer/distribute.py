"""Device setup and the choice of tf.distribute strategy."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from doctags_core.config import TrainingConfig
from trainer import tf_config


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


def make_strategy(cfg: TrainingConfig) -> tf.distribute.Strategy:
    """The strategy for this process: one code path, three layouts.

    - TF_CONFIG naming several workers: MultiWorkerMirroredStrategy (each
      worker's GPUs, or its CPU; ``logical_cpu_devices`` does not add
      replicas there). Creating it starts this worker's gRPC server, so it
      must happen before any other TensorFlow op runs in the process.
    - Otherwise MirroredStrategy over ``training.devices``, all GPUs, or the
      CPU(s): with ``logical_cpu_devices`` > 1 and no GPU the logical CPUs
      are the replicas, which is how the multi-replica path is tested here.
      A single device still goes through MirroredStrategy, so every layout
      runs the same distributed step.
    """
    if tf_config.current().multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cfg.devices:
        return tf.distribute.MirroredStrategy(devices=list(cfg.devices))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def replica_sum(strategy: tf.distribute.Strategy) -> Callable[[tf.Tensor], tf.Tensor]:
    """``f(x)``: the sum of ``x`` over every replica of every worker (one all-reduce).

    How one process's small decision reaches the others: each worker passes
    its value (or zeros) and all get the same total. Every worker must call
    it at the same point, as for any collective. Build it once and reuse it:
    each call of a new one traces a new graph.
    """

    @tf.function
    def total(x):
        per_replica = strategy.run(tf.identity, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return total


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: list[int]) -> list[int]:
    """The chief's small non-negative integers, on every worker.

    A decision only the chief can make (the auto choice needs the validation
    scores, which only the chief computes) but every worker must act on
    (each training step is a collective all of them enter). One
    `replica_sum` in which the other workers add zeros; every worker has the
    same number of replicas, so the chief's value comes back times that
    number.

    Args:
        strategy: The process's strategy.
        values: The chief's values; a same-length placeholder elsewhere.
    """
    role = tf_config.current()
    if role.num_workers <= 1:
        return list(values)
    mine = tf.constant([float(v) if role.is_chief else 0.0 for v in values], tf.float32)
    per_worker = strategy.num_replicas_in_sync // role.num_workers
    return [round(float(v) / per_worker) for v in replica_sum(strategy)(mine).numpy()]
