"""Training batches whose order is a pure function of (seed, epoch).

Resuming in the middle of an epoch needs the data position, not just the
weights. Here each epoch's order depends only on the seed and the epoch
number, so "epoch 3, step 17" names the next batch exactly: rebuild epoch 3
and ``skip(17)``. No iterator state is saved, so a restart may even use a
different number of workers (with the same global batch). The cost is that
a resumed epoch reads and parses the batches it skips once more.

The shards are read in a fixed order (deterministic interleave); examples
are shuffled by a seeded buffer, then batched by the GLOBAL batch size.
Distribution splits every global batch across replicas and workers
(`AutoShardPolicy.DATA`), so step N sees the same examples on one device,
on two logical devices and on two workers: the layouts are comparable.
"""

from __future__ import annotations

import tensorflow as tf

from trainer import data as data_lib

PARSE_BATCH = 512  # examples parsed and vectorized together before shuffling


def distribution_options() -> tf.data.Options:
    """Deterministic order; each global batch is split across the cluster."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch (different every epoch, same every run)."""
    return seed * 100_003 + epoch


def parsed_examples(file_pattern: str, vectorizer, label_encoder) -> tf.data.Dataset:
    """Every example of a split as ``(token_ids, multi_hot)``, in file order."""
    batches = data_lib.make_dataset(
        file_pattern, vectorizer, label_encoder, PARSE_BATCH, shuffle=False
    )
    return batches.unbatch()


def epoch_batches(
    examples: tf.data.Dataset,
    epoch: int,
    global_batch: int,
    seed: int,
    shuffle_buffer: int,
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """The global batches of ``epoch``, starting after ``skip_steps`` batches.

    Args:
        examples: From `parsed_examples`.
        epoch: 0-based epoch; picks the order.
        global_batch: Examples per step over all replicas and workers.
        seed: The run's seed (``training.seed``).
        shuffle_buffer: Examples held by the shuffle buffer.
        skip_steps: Batches already trained in this epoch (when resuming).
    """
    ds = examples.shuffle(
        shuffle_buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False
    )
    ds = ds.batch(global_batch).skip(skip_steps).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(distribution_options())


def eval_batches(file_pattern: str, vectorizer, label_encoder, global_batch: int):
    """A split in file order, batched by the global batch, for distributed evaluation."""
    ds = data_lib.make_dataset(file_pattern, vectorizer, label_encoder, global_batch)
    return ds.with_options(distribution_options())
