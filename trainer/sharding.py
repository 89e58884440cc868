"""Which records each input shard reads in one epoch: a pure function of its arguments.

With several workers, each one reads only its share of the training files
instead of parsing the whole split and keeping a slice of every batch. The
share must be deterministic (a resumed epoch re-reads exactly the same
records), different every epoch, and equal in step count on every worker,
because every step is a collective that all workers must enter.

The rule (`plan_epoch`):

1. The train files are put in an order that depends only on the seed and the
   epoch (a seeded permutation: a different order every epoch, the same on a
   rerun).
2. Their records, concatenated in that order, are cut into ``num_shards``
   contiguous ranges whose sizes differ by at most one record (shard ``d``
   holds records ``N*d//D`` up to ``N*(d+1)//D``). A range may start or end
   inside a file, so fewer files than shards still splits by records.
3. Every step, each shard contributes ``global_batch / num_shards`` examples.
   Every shard runs the same number of steps, ``ceil(N / global_batch)``
   (exactly the step count of one unsharded device); a shard whose range runs
   out one batch early contributes an empty batch to the last step. So
   nothing is dropped or repeated, every step but the last is a full global
   batch, and the last is short, as on one device.

Shards, not workers, are the unit: worker ``w`` of ``W`` reads the shards
``d`` with ``d % W == w``. Two layouts with the same ``num_shards`` and global
batch train on the same examples at every step, whatever their devices and
workers; the global batch of one step is the same SET of examples (summed
gradients differ only in summation order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FileRange:
    """A contiguous run of records of one file.

    Attributes:
        path: The TFRecord file.
        start: Records skipped at the start of the file.
        count: Records read after those.
    """

    path: str
    start: int
    count: int


@dataclass(frozen=True)
class EpochPlan:
    """What every input shard reads in one epoch.

    Attributes:
        epoch: 0-based epoch.
        shards: Per shard, its file ranges in reading order.
        shard_batch: Examples a shard contributes to a full step.
        steps: Steps in the epoch, the same for every shard.
        examples: Records in the epoch (all shards).
    """

    epoch: int
    shards: tuple[tuple[FileRange, ...], ...]
    shard_batch: int
    steps: int
    examples: int

    def shard_examples(self, shard: int) -> int:
        """Records of one shard."""
        return sum(r.count for r in self.shards[shard])

    def worker_shards(self, worker: int, num_workers: int) -> list[int]:
        """The shards worker ``worker`` of ``num_workers`` reads."""
        return [d for d in range(len(self.shards)) if d % num_workers == worker]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's order (different every epoch, same every run)."""
    return seed * 100_003 + epoch


def file_order(num_files: int, seed: int, epoch: int) -> list[int]:
    """The epoch's permutation of the (sorted) files.

    numpy's legacy `RandomState` has a frozen stream, so the order does not
    change with the numpy version (a resumed run may be on another image).
    """
    rng = np.random.RandomState(epoch_seed(seed, epoch) % 2**32)
    return [int(i) for i in rng.permutation(num_files)]


def check_layout(global_batch: int, num_shards: int, num_workers: int) -> None:
    """Raises ValueError unless shards split evenly over workers and batches."""
    if num_shards < 1 or num_shards % num_workers:
        raise ValueError(
            f"training.input_shards={num_shards} must be a multiple of the {num_workers} "
            "worker(s): every worker reads the same number of shards"
        )
    if global_batch % num_shards:
        raise ValueError(
            f"the global batch {global_batch} must be a multiple of training.input_shards="
            f"{num_shards}: each shard contributes an equal part of every step"
        )


def plan_epoch(
    files: list[str], counts: list[int], seed: int, epoch: int, num_shards: int, global_batch: int
) -> EpochPlan:
    """The file ranges of every shard for ``epoch`` (see the module docstring).

    Args:
        files: The split's files, sorted (the order must not depend on the
            file system's listing).
        counts: Records per file.
        seed: The run's seed (``training.seed``).
        epoch: 0-based epoch.
        num_shards: Input shards (a multiple of the worker count).
        global_batch: Examples per step over all shards (a multiple of
            ``num_shards``).
    """
    check_layout(global_batch, num_shards, 1)
    total = sum(counts)
    bounds = [total * d // num_shards for d in range(num_shards + 1)]
    shards: list[list[FileRange]] = [[] for _ in range(num_shards)]
    offset = 0  # position of the current file's first record in the epoch
    for i in file_order(len(files), seed, epoch):
        begin, end = offset, offset + counts[i]
        for d in range(num_shards):
            lo, hi = max(begin, bounds[d]), min(end, bounds[d + 1])
            if lo < hi:
                shards[d].append(FileRange(files[i], lo - begin, hi - lo))
        offset = end
    return EpochPlan(
        epoch=epoch,
        shards=tuple(tuple(s) for s in shards),
        shard_batch=global_batch // num_shards,
        steps=math.ceil(total / global_batch),
        examples=total,
    )
