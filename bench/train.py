"""Training throughput: the doctags loop vs Keras ``model.fit`` on the same model.

    python bench/train.py [--config configs/reuters.yaml] [--epochs 3] [--rounds 3]
        [--families dnn cnn] [--steps-per-call 1 16] [--devices 1] [--work /tmp/training-bench]

Preprocesses the config's corpus once (Beam, into --work), then, for each
round and family, trains one fresh process per variant, in an order that
rotates every round (so drift and other load on this shared machine fall on
every variant alike):

- ``doctags loop``: the custom distributed loop of `trainer.train`, streaming
  TFRecords through tf.data, with each ``--steps-per-call`` value
  (``training.steps_per_call``), on each ``--devices`` count of logical CPU
  devices (MirroredStrategy; the "devices" share the same cores);
- ``keras fit``: the seeds' approach on the same data: every training
  document loaded into numpy arrays in memory, then ``model.fit`` on one
  device (default ``steps_per_execution`` 1), same model, optimizer, loss,
  metrics and global batch.

Training examples/s is the number of training documents divided by the
MEDIAN time of the epochs after the first (the first pays for tracing);
validation is not timed. Peak RSS is the child process's VmHWM. The table
gives each variant's median examples/s over the rounds (with the range), and
its ratio to ``fit``: the median over rounds of loop/fit measured in the
same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from doctags_core.metrics import format_table  # noqa: E402


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM).

    Not ``ru_maxrss``: Linux carries that over from the parent across exec,
    so a child would report at least its parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def overrides(args, family: str, devices: int, steps_per_call: int = 1) -> dict:
    return {
        "output_dir": os.path.join(args.work, f"{family}-{devices}-{steps_per_call}"),
        "model.family": family,
        "training.epochs": args.epochs,
        "training.early_stopping_patience": args.epochs,  # every epoch runs
        "training.logical_cpu_devices": devices,
        "training.steps_per_call": steps_per_call,
    }


def child_loop(args) -> dict:
    """One doctags training run; reuses the preprocessed data of --work."""
    from doctags_core.config import load_config
    from trainer.distribute import configure_logical_cpus

    cfg = load_config(args.config, overrides(args, args.family, args.devices, args.steps_per_call))
    configure_logical_cpus(args.devices)
    data_dir = os.path.join(args.work, "data")
    os.makedirs(cfg.output_dir, exist_ok=True)
    if not os.path.exists(cfg.data_dir):
        os.symlink(data_dir, cfg.data_dir)
    from trainer.train import train

    train(cfg)
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    metadata = json.load(open(os.path.join(cfg.data_dir, "metadata.json")))
    timed = summary["epoch_seconds_this_process"][1:]
    return {
        "approach": "doctags loop",
        "family": args.family,
        "devices": summary["replicas"],
        "steps_per_call": args.steps_per_call,
        "timed_epochs": len(timed),
        "examples_s": metadata["documents"]["train"] / statistics.median(timed),
        "peak_rss_mib": peak_rss_mib(),
        "val_pr_auc": summary["history"]["val_pr_auc"][-1],
    }


def child_seed(args) -> dict:
    """The seeds' approach: the whole train split in numpy, then model.fit."""
    import keras
    import numpy as np

    from doctags_core import data_files, schema
    from doctags_core.config import load_config
    from trainer import data as data_lib
    from trainer.fused_adam import FusedAdam
    from trainer.models import build_model

    cfg = load_config(args.config, overrides(args, args.family, 1))
    data_dir = os.path.join(args.work, "data")
    keras.utils.set_random_seed(cfg.training.seed)
    vectorizer = data_lib.make_vectorizer(
        data_files.load_vocabulary(data_dir), cfg.model.sequence_length
    )
    labels = data_files.load_labels(data_dir)
    encoder = data_lib.make_label_encoder(labels)

    def arrays(split):
        pattern = schema.split_pattern(data_dir, split)
        xs, ys = [], []
        for x, y in data_lib.make_dataset(pattern, vectorizer, encoder, 1024):
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    x, y = arrays("train")
    val = arrays("validation")
    counts, n_train = data_files.load_label_counts(data_dir, labels)
    priors = [c / max(n_train, 1) for c in counts]
    model = build_model(cfg.model, vectorizer.vocabulary_size(), len(labels), priors)
    model.compile(
        # The loop's optimizer, so the two differ only in how they run steps.
        optimizer=FusedAdam(cfg.training.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[  # the metrics the loop tracks too
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.AUC(curve="ROC", name="roc_auc"),
        ],
    )

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self.last - self.started)  # training only, like the loop

    timer = EpochTimer()
    history = model.fit(
        x,
        y,
        batch_size=cfg.training.batch_size,
        epochs=args.epochs,
        shuffle=True,
        validation_data=val,
        callbacks=[timer],
        verbose=0,
    )
    timed = timer.seconds[1:]
    return {
        "approach": "keras fit",
        "family": args.family,
        "devices": 1,
        "steps_per_call": 1,
        "timed_epochs": len(timed),
        "examples_s": len(x) / statistics.median(timed),
        "peak_rss_mib": peak_rss_mib(),
        "val_pr_auc": float(history.history["val_pr_auc"][-1]),
    }


def run_child(args, variant: tuple, family: str) -> dict:
    kind, devices, steps_per_call = variant
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--family", family]
    cmd += ["--devices", str(devices), "--config", args.config, "--epochs", str(args.epochs)]
    cmd += ["--work", args.work, "--steps-per-call", str(steps_per_call)]
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"({kind} {family} x{devices} steps/call {steps_per_call}: "
        f"{row['examples_s']:.0f} examples/s, {time.time() - started:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return row


def preprocess(args) -> None:
    from doctags.cli import main as doctags_main

    if os.path.exists(os.path.join(args.work, "data", "metadata.json")):
        return
    started = time.time()
    code = doctags_main(["preprocess", "--config", args.config, "--set", f"output_dir={args.work}"])
    assert code == 0
    print(f"(preprocess took {time.time() - started:.0f}s)", file=sys.stderr)


def variants(args) -> list[tuple]:
    """``(kind, devices, steps_per_call)`` of every row of one family."""
    loops = [("loop", d, k) for d in args.devices for k in args.steps_per_call]
    return [*loops, ("seed", 1, 1)]


def summarize(family: str, variant: tuple, runs: list[dict], fits: list[dict]) -> dict:
    """One table row: median examples/s over rounds, range, and the paired ratio to fit."""
    rates = [r["examples_s"] for r in runs]
    ratios = [r["examples_s"] / f["examples_s"] for r, f in zip(runs, fits)]
    return {
        "family": family,
        "approach": runs[0]["approach"],
        "devices": variant[1],
        "steps_per_call": variant[2],
        "rounds": len(runs),
        "examples_s": round(statistics.median(rates)),
        "range": f"{min(rates):.0f}-{max(rates):.0f}",
        "vs_fit": f"{statistics.median(ratios):.2f}x",
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)),
        "val_pr_auc": statistics.median(r["val_pr_auc"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "reuters.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="the first one is not timed")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats")
    parser.add_argument("--families", nargs="+", default=["dnn", "cnn"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1])
    parser.add_argument("--steps-per-call", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--work", default="/tmp/training-bench")
    parser.add_argument("--child", choices=["loop", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    if args.child:
        args.devices = args.devices[0]
        args.steps_per_call = args.steps_per_call[0]
        row = child_loop(args) if args.child == "loop" else child_seed(args)
        print(json.dumps(row))
        return
    preprocess(args)
    runs: dict[tuple, list[dict]] = {}
    for round_ in range(args.rounds):
        for family in args.families:
            order = variants(args)
            shift = round_ % len(order)
            for variant in order[shift:] + order[:shift]:  # rotate: no fixed position
                runs.setdefault((family, variant), []).append(run_child(args, variant, family))
    rows = []
    for family in args.families:
        fits = runs[(family, ("seed", 1, 1))]
        rows += [summarize(family, v, runs[(family, v)], fits) for v in variants(args)]
    columns = ["family", "approach", "devices", "steps_per_call", "rounds", "examples_s"]
    columns += ["range", "vs_fit", "peak_rss_mib", "val_pr_auc"]
    print(format_table(rows, columns))
    print(f"cpu cores: {os.cpu_count()}; load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
