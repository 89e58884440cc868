"""Does tf.data keep the model fed? Input examples/s vs the CNN's training examples/s.

    python bench/input_pipeline.py --data-dir /tmp/doctags-scale/run-100000-in_memory/data

On the Beam job's TFRecords (train split), measures the trainer's own input
pipeline (`trainer.data.make_dataset`: parallel interleave, shuffle, batch,
parse, TextVectorization, multi-hot labels, prefetch) in model-ready batches
at batch sizes 256 and 1024, twice: with tf.data's default thread pool (all
cores) and with a private pool of one thread (the per-core rate). Next to
it, the training step rate of the CNN from configs/reuters.yaml on this CPU,
fed from a cached in-memory dataset so that input cost is excluded.

Prints one table, then the per-host estimate for 8 GPUs, which is
arithmetic on the measured per-core rate (no GPU here): tf.data work is
per-batch and data-parallel, so its rate scales with the cores given to it
until disk or memory bandwidth limits it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tensorflow as tf  # noqa: E402

from doctags_core import schema  # noqa: E402
from doctags_core.config import load_config  # noqa: E402
from doctags_core.data_files import load_labels, load_vocabulary  # noqa: E402
from trainer.data import (  # noqa: E402
    make_dataset,
    make_label_encoder,
    make_vectorizer,
)
from trainer.models import build_model  # noqa: E402


def input_rate(pattern, vectorizer, encoder, batch_size, seconds, threads=None) -> float:
    """Examples/s the trainer's tf.data pipeline delivers (after warm-up)."""
    ds = make_dataset(pattern, vectorizer, encoder, batch_size, shuffle=True, seed=1).repeat()
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    it = iter(ds)
    for _ in range(5):
        next(it)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        ids, _ = next(it)
        n += int(ids.shape[0])
    return n / (time.perf_counter() - started)


def train_rate(cfg, vocab_size, num_labels, batch, seconds) -> float:
    """Examples/s of CNN training steps on in-memory batches (input excluded)."""
    import keras

    model = build_model(cfg.model, vocab_size, num_labels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    x, y = batch
    cached = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(cached, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    steps = 1
    while True:
        started = time.perf_counter()
        model.fit(cached, steps_per_epoch=steps, epochs=1, verbose=0)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds or steps >= 512:
            return steps * int(x.shape[0]) / elapsed
        steps *= 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the Beam job's data/ directory")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "reuters.yaml"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    parser.add_argument("--gpu-host-cores", type=int, default=48, help="cores for tf.data")
    args = parser.parse_args()

    cfg = load_config(args.config, check_inputs=False)
    vocabulary = load_vocabulary(args.data_dir)
    labels = load_labels(args.data_dir)
    vectorizer = make_vectorizer(vocabulary, cfg.model.sequence_length)
    encoder = make_label_encoder(labels)
    pattern = schema.split_pattern(args.data_dir, "train")
    files = tf.io.gfile.glob(pattern)
    print(
        f"machine: {os.cpu_count()} cores, load average "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} (shared with other jobs); "
        f"{len(files)} train shard(s), vocabulary {len(vocabulary)}, {len(labels)} labels, "
        f"CNN {cfg.model.family} sequence_length {cfg.model.sequence_length}"
    )
    rows = []
    for b in args.batch_sizes:
        all_cores = input_rate(pattern, vectorizer, encoder, b, args.seconds)
        one_core = input_rate(pattern, vectorizer, encoder, b, args.seconds, threads=1)
        sample = next(iter(make_dataset(pattern, vectorizer, encoder, b)))
        train = train_rate(cfg, len(vectorizer.get_vocabulary()), len(labels), sample, args.seconds)
        rows.append((b, all_cores, one_core, train))
        print(
            f"batch {b}: input {all_cores:,.0f}/s, 1 thread {one_core:,.0f}/s, "
            f"CNN train {train:,.0f}/s",
            flush=True,
        )

    print()
    print(
        "| batch | tf.data examples/s (all cores) | tf.data examples/s (1 thread) "
        "| CNN training examples/s | input / training |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for b, all_cores, one_core, train in rows:
        print(
            f"| {b} | {all_cores:,.0f} | {one_core:,.0f} | {train:,.0f} | "
            f"{all_cores / train:.1f}x |"
        )
    print()
    for b, _, one_core, _ in rows:
        host = one_core * args.gpu_host_cores
        print(
            f"8 GPUs, batch {b}: {one_core:,.0f} examples/s per input thread x "
            f"{args.gpu_host_cores} cores for tf.data = ~{host:,.0f} examples/s per host, "
            f"~{host / 8:,.0f} per GPU (linear-scaling estimate, not a GPU measurement)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
