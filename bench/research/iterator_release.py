"""How long the training loop's thread waits when it lets go of a finished epoch's iterator.

Reproduces the stall of FINDINGS.md section 5e without doctags' data: a
distributed dataset (MirroredStrategy over one CPU device, as every
single-device doctags layout), consumed for ``--seconds`` per epoch by a
compiled step that takes 16 elements per call, then released either by
``del`` on the main thread (what the loop did) or through
`doctags_core.iterator_release.release_in_background` (what it does now). The
two ways alternate epoch by epoch in one process, so both see the same
machine. For each epoch it prints the main thread's wait and, for the
background way, how long the release thread took.

    python bench/research/iterator_release.py --seconds 45 --epochs 8

The stall is sporadic (about every other 45-second epoch here); when it
happens it lasts until the iterator's autotuning thread wakes for its next
optimization, so its length follows from the epoch length.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf

from doctags_core import iterator_release


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="length of each epoch")
    parser.add_argument("--epochs", type=int, default=8, help="epochs in all, alternating ways")
    args = parser.parse_args(argv)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        weights = tf.Variable(tf.random.normal([256, 256], seed=1))

    def dataset(_context):
        elements = tf.data.Dataset.range(10**9).map(
            lambda _: tf.random.normal([64, 256]), num_parallel_calls=tf.data.AUTOTUNE
        )
        return elements.prefetch(tf.data.AUTOTUNE)

    def replica_step(x):
        weights.assign_add(0.0 * tf.reduce_mean(tf.matmul(x, weights)) * weights)

    @tf.function
    def steps(iterator):
        for _ in tf.range(16):
            strategy.run(replica_step, args=(next(iterator),))

    print("| epoch | release | steps | main thread waited s | release thread took s |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for epoch in range(args.epochs):
        background = epoch % 2 == 1
        iterator = iter(strategy.distribute_datasets_from_function(dataset))
        started, done = time.time(), 0
        while time.time() - started < args.seconds:
            steps(iterator)
            done += 16
        ended = time.time()
        if background:
            iterator_release.release_in_background(iterator)
        del iterator
        waited = time.time() - ended
        took = ""
        if background:
            iterator_release.wait_for_releases()  # only to report it; the loop never waits
            took = f"{time.time() - ended:.2f}"
        way = "background" if background else "main thread"
        print(f"| {epoch} | {way} | {done} | {waited:.2f} | {took} |", flush=True)


if __name__ == "__main__":
    main()
