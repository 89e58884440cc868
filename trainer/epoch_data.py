"""Each worker's training batches, in an order that is a pure function of (seed, epoch).

Resuming in the middle of an epoch needs the data position, not just the
weights. Here each epoch's order depends only on the seed, the epoch, the
global batch and the number of input shards, so "epoch 3, step 17" names
the next batch exactly: rebuild epoch 3 and skip 17 batches. No iterator
state is saved. The cost is that a resumed epoch reads the records of the
batches it skips once more (they are skipped before parsing).

Each worker reads only its own input shards (`trainer.sharding`: the
epoch's files in a seeded order, cut into equal record ranges), so the
input cost per worker falls as workers are added. A shard's records are
shuffled by a seeded buffer of serialized records (a few KB each, whatever
the model's input: TF-IDF vectors are never held), batched by the shard's
part of the global batch, padded with empty batches to the common step
count, and only then parsed and vectorized. A worker concatenates its
shards' batches into its part of the global batch and splits that over its
local replicas, so each replica gets one element per step, the same number
of steps everywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import tensorflow as tf

from doctags_core import data_files
from trainer import data as data_lib
from trainer.sharding import EpochPlan, check_layout, epoch_seed, plan_epoch

log = logging.getLogger(__name__)

INTERLEAVE = 8  # files of a shard read at once (deterministic order)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def eval_options() -> tf.data.Options:
    """Deterministic order; each global batch is split across the cluster."""
    options = _options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


@dataclass(frozen=True)
class TrainSplit:
    """The training files with their record counts, and how to parse a batch.

    Attributes:
        files: The split's TFRecord files, sorted.
        counts: Records per file (counted once, `trainer.data.count_records`).
        parse: ``f(serialized [batch])`` -> ``(ids, multi_hot)``.
    """

    files: tuple[str, ...]
    counts: tuple[int, ...]
    parse: object

    @classmethod
    def from_pattern(cls, file_pattern: str | list[str], vectorizer, label_encoder) -> TrainSplit:
        """Lists and counts the files of one or more patterns (every worker, the same answer).

        Several patterns: the training splits of a refit (train, then
        validation), each pattern's files sorted.

        Raises:
            FileNotFoundError: when a pattern matches no file.
        """
        started = time.perf_counter()
        patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
        files = [f for pattern in patterns for f in data_files.files_matching(pattern)]
        counts = data_lib.count_records(files)
        log.info(
            "counted %d training records in %d file(s) in %.1fs",
            sum(counts),
            len(files),
            time.perf_counter() - started,
        )
        return cls(tuple(files), tuple(counts), data_lib.record_parser(vectorizer, label_encoder))

    @property
    def examples(self) -> int:
        return sum(self.counts)

    def plan(self, epoch: int, seed: int, num_shards: int, global_batch: int) -> EpochPlan:
        """What every shard reads in ``epoch`` (`trainer.sharding.plan_epoch`)."""
        return plan_epoch(
            list(self.files), list(self.counts), seed, epoch, num_shards, global_batch
        )


def _shard_records(plan: EpochPlan, shard: int) -> tf.data.Dataset:
    """The serialized records of one shard, its files interleaved in a fixed order."""
    ranges = plan.shards[shard]
    if not ranges:
        return tf.data.Dataset.from_tensor_slices(tf.zeros([0], tf.string))
    files = tf.data.Dataset.from_tensor_slices(
        (
            [r.path for r in ranges],
            tf.constant([r.start for r in ranges], tf.int64),
            tf.constant([r.count for r in ranges], tf.int64),
        )
    )
    return files.interleave(
        lambda path, start, count: (
            tf.data.TFRecordDataset(path, compression_type="GZIP").skip(start).take(count)
        ),
        cycle_length=min(len(ranges), INTERLEAVE),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def shard_batches(
    split: TrainSplit,
    plan: EpochPlan,
    shard: int,
    seed: int,
    shuffle_buffer: int,
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """One shard's parsed batches of ``epoch``: exactly ``plan.steps - skip_steps``.

    Args:
        split: The training files.
        plan: The epoch's plan.
        shard: Which input shard.
        seed: The run's seed (``training.seed``).
        shuffle_buffer: Serialized records held by the shuffle buffer.
        skip_steps: Batches already trained in this epoch (when resuming).
    """
    shuffle_seed = epoch_seed(seed, plan.epoch) * 1_009 + shard
    records = _shard_records(plan, shard).shuffle(
        shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False
    )
    # A shard whose range runs out a batch early pads the last step with an
    # empty batch: every shard (and so every worker) runs plan.steps steps.
    empty = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string)).repeat()
    batches = records.batch(plan.shard_batch).concatenate(empty).take(plan.steps)
    return batches.skip(skip_steps).map(split.parse, num_parallel_calls=tf.data.AUTOTUNE)


def _concat(*parts):
    return tuple(tf.concat(tensors, axis=0) for tensors in zip(*parts))


def _per_replica(batch_ds: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Splits every batch into ``replicas`` consecutive slices, one element each."""
    if replicas == 1:
        return batch_ds

    def split(*batch):
        n = tf.shape(batch[0], out_type=tf.int64)[0]
        bounds = n * tf.range(replicas + 1, dtype=tf.int64) // replicas
        return tf.data.Dataset.range(replicas).map(
            lambda r: tuple(t[bounds[r] : bounds[r + 1]] for t in batch)
        )

    return batch_ds.flat_map(split)


def worker_batches(
    split: TrainSplit,
    plan: EpochPlan,
    context: tf.distribute.InputContext,
    seed: int,
    shuffle_buffer: int,
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """This worker's per-replica batches of one epoch, for `distribute_datasets_from_function`.

    Worker ``w`` reads the shards ``d % W == w``; its part of a step's global
    batch is the concatenation of its shards' batches, split over its local
    replicas (each gets ``plan.steps - skip_steps`` elements, some maybe empty).
    """
    workers = context.num_input_pipelines
    check_layout(plan.shard_batch * len(plan.shards), len(plan.shards), workers)
    mine = plan.worker_shards(context.input_pipeline_id, workers)
    parts = [shard_batches(split, plan, d, seed, shuffle_buffer, skip_steps) for d in mine]
    batches = parts[0] if len(parts) == 1 else tf.data.Dataset.zip(tuple(parts)).map(_concat)
    local_replicas = context.num_replicas_in_sync // workers
    return _per_replica(batches, local_replicas).prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_batches(file_pattern: str, vectorizer, label_encoder, global_batch: int):
    """A split in file order, batched by the global batch, for distributed evaluation."""
    ds = data_lib.make_dataset(file_pattern, vectorizer, label_encoder, global_batch)
    return ds.with_options(eval_options())
