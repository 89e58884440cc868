"""Training throughput benchmark: the doctags loop vs the seeds' numpy + model.fit.

    python bench/train.py [--config configs/reuters.yaml] [--epochs 4]
        [--families dnn cnn] [--devices 1 2] [--work /tmp/training-bench]

Preprocesses the config's corpus once (Beam, into --work), then trains each
model family in a fresh process per row:

- ``doctags loop``: the custom distributed loop of `trainer.train`, streaming
  TFRecords through tf.data, on 1 and on 2 logical CPU devices
  (MirroredStrategy; on this CPU the two "devices" share the same cores);
- ``seed numpy+fit``: the seeds' approach on the same data: every training
  document loaded into numpy arrays in memory, then ``model.fit`` on one
  device, same model, optimizer, loss and global batch.

Training examples/s is the number of training documents divided by the
MEDIAN time of the epochs after the first (the first pays for tracing;
the median resists other load on a shared machine); validation is not
timed. Peak RSS is the child process's VmHWM. Prints one table.
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


def overrides(args, family: str, devices: int) -> dict:
    return {
        "output_dir": os.path.join(args.work, f"{family}-{devices}"),
        "model.family": family,
        "training.epochs": args.epochs,
        "training.early_stopping_patience": args.epochs,  # every epoch runs
        "training.logical_cpu_devices": devices,
    }


def child_loop(args) -> dict:
    """One doctags training run; reuses the preprocessed data of --work."""
    from doctags_core.config import load_config
    from trainer.distribute import configure_logical_cpus

    cfg = load_config(args.config, overrides(args, args.family, args.devices))
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
        optimizer=keras.optimizers.Adam(cfg.training.learning_rate),
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
        "approach": "seed numpy+fit",
        "family": args.family,
        "devices": 1,
        "timed_epochs": len(timed),
        "examples_s": len(x) / statistics.median(timed),
        "peak_rss_mib": peak_rss_mib(),
        "val_pr_auc": float(history.history["val_pr_auc"][-1]),
    }


def run_child(args, kind: str, family: str, devices: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--family", family]
    cmd += ["--devices", str(devices), "--config", args.config, "--epochs", str(args.epochs)]
    cmd += ["--work", args.work]
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"({kind} {family} x{devices}: {time.time() - started:.0f}s)", file=sys.stderr)
    return row


def preprocess(args) -> None:
    from doctags.cli import main as doctags_main

    if os.path.exists(os.path.join(args.work, "data", "metadata.json")):
        return
    started = time.time()
    code = doctags_main(["preprocess", "--config", args.config, "--set", f"output_dir={args.work}"])
    assert code == 0
    print(f"(preprocess took {time.time() - started:.0f}s)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "reuters.yaml"))
    parser.add_argument("--epochs", type=int, default=4, help="the first one is not timed")
    parser.add_argument("--families", nargs="+", default=["dnn", "cnn"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--work", default="/tmp/training-bench")
    parser.add_argument("--child", choices=["loop", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    if args.child:
        args.devices = args.devices[0]
        row = child_loop(args) if args.child == "loop" else child_seed(args)
        print(json.dumps(row))
        return
    preprocess(args)
    rows = []
    for family in args.families:
        for devices in args.devices:
            rows.append(run_child(args, "loop", family, devices))
        rows.append(run_child(args, "seed", family, 1))
    columns = ["approach", "family", "devices", "timed_epochs", "examples_s", "peak_rss_mib"]
    print(format_table(rows, [*columns, "val_pr_auc"]))
    print(f"cpu cores: {os.cpu_count()}; load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
