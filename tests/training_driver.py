"""Runs `trainer.train.train` in a fresh process, for the training tests.

    python -m tests.training_driver --config C [--set K=V ...] [--weights OUT.npz]
        [--step-sleep SECONDS]

A fresh process because logical CPU devices and the multi-worker strategy
must be set up before TensorFlow initialises. ``--weights`` saves the final
weights of THIS process's model (every worker has one), ``--step-sleep``
slows each step down so a test can kill the run in the middle of an epoch.
"""

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import yaml

from doctags_core.config import load_config
from trainer.distribute import configure_logical_cpus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--weights")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.config, overrides)
    configure_logical_cpus(cfg.training.logical_cpu_devices)
    from trainer.train import train

    def on_step(epoch: int, step: int) -> None:
        print(f"step {epoch}:{step}", flush=True)
        time.sleep(args.step_sleep)

    result = train(cfg, on_step=on_step if args.step_sleep else None)
    if args.weights and result.model is not None:  # auto keeps no single model in memory
        np.savez(args.weights, *result.model.get_weights())
    print(f"driver done: {result.epochs_run} epochs", flush=True)


if __name__ == "__main__":
    main()
