"""The one training loop on every layout, for real, in fresh processes.

Each run is a subprocess (`tests/training_driver.py`): logical CPU devices
and MultiWorkerMirroredStrategy must be set up before TensorFlow starts.
All runs train the same tiny dnn on the same real Reuters slice, preprocessed
once, with the same GLOBAL batch of 32 (about 9 steps per epoch).

Tolerance for "same model" across layouts: weights within 1e-5 (absolute).
Measured on this machine: one device vs two logical devices vs two workers
differ by at most 3e-8 after 27 steps (summation order only); a SIGKILLed and
resumed run equals its uninterrupted twin bit for bit.

Each worker reads only its input shards (`trainer.sharding`), and the data
of a step depends on the number of shards: the layouts compared here all
use ``input_shards: 2`` (the default for two workers), so the one device,
the two logical devices and the two workers see the same examples at every
step.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from doctags.cli import main
from doctags_core.config import load_config
from tests.conftest import REPO, small_config
from trainer.checkpoint import backup_directory, read_position

LAYOUT_TOLERANCE = 1e-5
XLA_LINE = "Compiled cluster using XLA"
BASE_TRAINING = {"batch_size": 32, "epochs": 3, "early_stopping_patience": 1}


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, reuters_slice):
    """The Reuters slice through the Beam job, once for the whole module."""
    tmp = tmp_path_factory.mktemp("training-data")
    config = small_config(tmp, reuters_slice)
    assert main(["preprocess", "--config", config]) == 0
    return load_config(config).data_dir


class Run:
    """One training config with its own output_dir holding a copy of the data."""

    def __init__(self, root, name, preprocessed, reuters_slice, model=None, **training):
        d = root / name
        d.mkdir()
        self.config = small_config(
            d, reuters_slice, training={**BASE_TRAINING, **training}, model=model or {}
        )
        self.cfg = load_config(self.config)
        shutil.copytree(preprocessed, self.cfg.data_dir)
        self.weights = str(d / "weights.npz")

    def command(self, step_sleep=0.0, weights=None):
        cmd = [sys.executable, "-m", "tests.training_driver", "--config", self.config]
        cmd += ["--weights", weights or self.weights]
        return cmd + (["--step-sleep", str(step_sleep)] if step_sleep else [])

    def start(self, step_sleep=0.0, env=None, log_name="log.txt", weights=None):
        env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "0", **(env or {})}
        log = open(os.path.join(os.path.dirname(self.weights), log_name), "w+")
        proc = subprocess.Popen(
            self.command(step_sleep, weights),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log = log
        return proc

    def output(self, proc) -> str:
        proc.log.seek(0)
        return proc.log.read()

    def finish(self, proc, timeout=600) -> str:
        proc.wait(timeout=timeout)
        out = self.output(proc)
        assert proc.returncode == 0, out[-4000:]
        return out

    def run(self, **kwargs) -> str:
        return self.finish(self.start(**kwargs))

    def final_weights(self, path=None) -> list[np.ndarray]:
        saved = np.load(path or self.weights)
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def summary(self) -> dict:
        return json.load(open(os.path.join(self.cfg.model_dir, "training_summary.json")))

    def history_csv(self) -> str:
        return open(os.path.join(self.cfg.model_dir, "history.csv")).read()


def max_difference(a, b) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, preprocessed, reuters_slice):
    """One device and two logical devices, dropout off, trained side by side."""
    root = tmp_path_factory.mktemp("layouts")
    shards = {"input_shards": 2}
    # One call per step on one device, several steps per call on two.
    one = Run(
        root, "one", preprocessed, reuters_slice, model={"dropout": 0.0}, steps_per_call=1, **shards
    )
    two = Run(
        root,
        "two",
        preprocessed,
        reuters_slice,
        model={"dropout": 0.0},
        logical_cpu_devices=2,
        steps_per_call=4,
        **shards,
    )
    procs = [one.start(), two.start()]
    logs = [one.finish(procs[0]), two.finish(procs[1])]
    return one, two, logs


def test_two_logical_devices_match_one_device(layouts):
    one, two, logs = layouts
    assert one.summary()["replicas"] == 1 and two.summary()["replicas"] == 2
    assert one.summary()["global_batch_size"] == two.summary()["global_batch_size"] == 32
    assert one.summary()["input_shards"] == two.summary()["input_shards"] == 2
    assert max_difference(one.final_weights(), two.final_weights()) < LAYOUT_TOLERANCE
    h1, h2 = one.summary()["history"], two.summary()["history"]
    assert set(h1) == {"loss", "pr_auc", "roc_auc", "val_loss", "val_pr_auc", "val_roc_auc"}
    for key in h1:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-5, err_msg=key)
    assert h1["loss"][-1] < h1["loss"][0]  # it trained
    # Every artifact the model.fit trainer wrote is still there.
    for name in ("model.keras", "thresholds.json", "history.csv", "config.yaml"):
        assert os.path.exists(os.path.join(one.cfg.model_dir, name)), name
    assert os.listdir(os.path.join(one.cfg.model_dir, "logs")) != []
    assert one.history_csv().splitlines()[0] == (
        "epoch,loss,pr_auc,roc_auc,val_loss,val_pr_auc,val_roc_auc"
    )
    assert len(one.history_csv().splitlines()) == 1 + one.summary()["epochs_run"]
    assert "epoch 1/3 - 9 steps" in logs[0]  # the per-epoch progress line
    assert XLA_LINE not in logs[0] + logs[1]  # jit_compile is off by default
    # A finished run leaves no resumable backup behind.
    assert not os.path.exists(backup_directory(one.cfg))


def _free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _worker_envs(tmp_path, count=2):
    """``(envs, tmp_dirs)``: each local worker's TF_CONFIG and a TMPDIR of its own."""
    tmp_dirs = [tmp_path / f"tmp{i}" for i in range(count)]
    for d in tmp_dirs:
        d.mkdir()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(count)]}
    envs = [
        {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            "TMPDIR": str(tmp_dirs[i]),
        }
        for i in range(count)
    ]
    return envs, tmp_dirs


def _run_cluster(tmp_path, workers):
    """Runs one `Run` per worker as a cluster to the end; ``(logs, tmp_dirs)``."""
    envs, tmp_dirs = _worker_envs(tmp_path, len(workers))
    procs = [w.start(env=env) for w, env in zip(workers, envs)]
    return [w.finish(p) for w, p in zip(workers, procs)], tmp_dirs


def test_two_workers_train_one_model_and_only_the_chief_writes(
    tmp_path, layouts, preprocessed, reuters_slice
):
    one = layouts[0]
    # Separate output dirs, so what each worker writes can be told apart.
    workers = [
        Run(tmp_path, f"worker{i}", preprocessed, reuters_slice, model={"dropout": 0.0})
        for i in range(2)
    ]
    logs, tmp_dirs = _run_cluster(tmp_path, workers)

    chief, other = workers
    a, b = chief.final_weights(), other.final_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "workers ended with different weights"
    assert max_difference(a, one.final_weights()) < LAYOUT_TOLERANCE
    summary = chief.summary()
    assert (summary["workers"], summary["replicas"], summary["global_batch_size"]) == (2, 2, 32)
    assert summary["input_shards"] == 2  # one per worker by default: each reads half
    assert os.path.exists(os.path.join(chief.cfg.model_dir, "model.keras"))
    # The other worker wrote nothing into its output dir...
    assert not os.path.exists(other.cfg.model_dir)
    assert "\nepoch 1/3" in logs[0] and "\nepoch 1/3" not in logs[1]  # nor printed progress,
    # but did write its checkpoint copies (to a temp dir, removed each time).
    assert "worker 1: checkpoint written to " + str(tmp_dirs[1]) in logs[1]
    assert list(tmp_dirs[1].iterdir()) == []


def test_two_workers_refit_the_members_only_the_chief_could_choose(
    tmp_path, preprocessed, reuters_slice
):
    """Only the chief has the validation scores; the others learn its choice by all-reduce.

    The refit reads train + validation, whose last global batch is short
    here: with several steps per call, the workers' sparse-gradient gathers
    of that step once met those of a full one and the run aborted.
    """
    from doctags_core.data_files import read_metadata

    documents = read_metadata(preprocessed)["documents"]
    assert (documents["train"] + documents["validation"]) % BASE_TRAINING["batch_size"]  # short
    workers = [
        Run(tmp_path, f"auto{i}", preprocessed, reuters_slice, model={"family": "auto"}, epochs=2)
        for i in range(2)
    ]
    logs, _ = _run_cluster(tmp_path, workers)
    chief, other = workers
    saved = json.load(open(os.path.join(chief.cfg.model_dir, "selection.json")))
    chosen = [m["name"] for m in saved["chosen"]["members"]]
    assert [r["name"] for r in saved["refit"]["members"]] == chosen
    for log in logs:
        refits = [line for line in log.splitlines() if "auto: refitting" in line]
        assert [line.split("refitting ")[1].split(" ")[0] for line in refits] == chosen
    assert not os.path.exists(other.cfg.model_dir)


def test_two_workers_stop_at_the_budget_together(tmp_path, preprocessed, reuters_slice):
    """Each worker's clock is asked after every epoch; one all-reduce makes them agree.

    A worker that stopped alone would leave the other waiting in the next
    step's collective: the run would hang instead of finishing.
    """
    workers = [
        Run(
            tmp_path,
            f"budget{i}",
            preprocessed,
            reuters_slice,
            model={"family": "auto"},
            budget_minutes=0.0001,
        )
        for i in range(2)
    ]
    logs, _ = _run_cluster(tmp_path, workers)
    saved = json.load(open(os.path.join(workers[0].cfg.model_dir, "selection.json")))
    assert [(c["status"], c["epochs"]) for c in saved["candidates"]] == [
        ("stopped by budget", 1),
        ("skipped (budget)", 0),
    ]
    for log in logs:
        assert "auto: training candidate tfidf_mlp" in log
        assert "auto: training candidate cnn" not in log


def _kill_mid_epoch(cfg, procs, victim, deadline=300):
    """Waits for a checkpoint inside epoch 2, lets a step run, then SIGKILLs."""
    started = time.time()
    while True:
        position = read_position(cfg)
        if position and position[0] >= 1 and position[1] >= 2:
            break
        assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
        assert time.time() - started < deadline, "no checkpoint inside epoch 2"
        time.sleep(0.05)
    time.sleep(0.3)  # past the checkpoint: the step in flight is lost and redone
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    assert procs[victim].returncode == -signal.SIGKILL
    position = read_position(cfg)  # what a restart resumes from
    assert position[0] == 1 and position[1] > 0, position
    return position


def test_sigkill_mid_epoch_then_restart_reaches_the_same_result(
    tmp_path, layouts, preprocessed, reuters_slice
):
    # Dropout on: the resumed run must also continue the dropout seed stream.
    # The reference runs one step per call, the killed run up to 3 (cut to
    # 2 by the checkpoints): the call size changes nothing, bit for bit.
    settings = {"checkpoint_every_steps": 2}
    reference = Run(
        tmp_path, "reference", preprocessed, reuters_slice, steps_per_call=1, **settings
    )
    killed = Run(tmp_path, "killed", preprocessed, reuters_slice, steps_per_call=3, **settings)
    reference_proc = reference.start()
    proc = killed.start(step_sleep=0.25, log_name="killed.txt")
    position = _kill_mid_epoch(killed.cfg, [proc], victim=0)
    assert not os.path.exists(os.path.join(killed.cfg.model_dir, "model.keras"))

    out = killed.run(step_sleep=0.25, log_name="resumed.txt")  # the same command again
    reference.finish(reference_proc)
    assert f"resuming at epoch 2, step {position[1]}" in out
    assert "epoch 1/3" not in out  # finished epochs are not trained again
    a, b = reference.final_weights(), killed.final_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), max_difference(a, b)
    assert killed.history_csv() == reference.history_csv()
    for name in ("threshold", "validation", "epochs_run", "best_epoch"):
        assert killed.summary()[name] == reference.summary()[name], name
    assert killed.summary()["resumed_from"] == list(position)
    # Not vacuous: another config (dropout on) lands elsewhere.
    assert max_difference(a, layouts[0].final_weights()) > 100 * LAYOUT_TOLERANCE


def test_mixed_precision_xla_and_per_replica_batch_on_two_logical_devices(
    tmp_path, preprocessed, reuters_slice
):
    import tensorflow as tf

    from trainer.export import export_model

    run = Run(
        tmp_path,
        "accelerated",
        preprocessed,
        reuters_slice,
        batch_size=16,  # the reference batch for the linear learning-rate rule
        logical_cpu_devices=2,
        per_replica_batch_size=16,
        learning_rate_scaling="linear",
        mixed_precision="mixed_float16",
        jit_compile=True,
    )
    out = run.run()
    summary = run.summary()
    assert (summary["replicas"], summary["global_batch_size"]) == (2, 32)
    assert summary["learning_rate"] == pytest.approx(0.001 * 32 / 16)
    assert summary["mixed_precision"] == "mixed_float16" and summary["jit_compile"]
    assert summary["loss_scale"] is not None and summary["loss_scale"] > 1  # LossScaleOptimizer
    assert XLA_LINE in out
    assert all(np.isfinite(v).all() for v in summary["history"].values())
    model = keras.models.load_model(os.path.join(run.cfg.model_dir, "model.keras"))
    assert model.get_layer("hidden").dtype_policy.name == "mixed_float16"
    assert model.get_layer("hidden").compute_dtype == "float16"
    assert model.get_layer("scores").dtype_policy.name == "float32"
    # The float16 model exports and serves float32 scores.
    serve = tf.saved_model.load(export_model(run.cfg)).signatures["serving_default"]
    scores = serve(text=tf.constant(["Crude oil prices rose", "Net profit up"]))["scores"]
    assert scores.dtype == tf.float32 and np.isfinite(scores.numpy()).all()


@pytest.mark.slow
def test_killed_worker_stops_the_cluster_and_a_restart_resumes(
    tmp_path, layouts, preprocessed, reuters_slice
):
    """TensorFlow's answer to a lost worker: the others abort, all restart.

    MultiWorkerMirroredStrategy cannot take a worker back into a running
    cluster: the survivors' collectives are aborted by the peer health check
    (a restarted peer is refused as well), so they exit with an error. The
    cluster manager (TFJob/Job with restartPolicy OnFailure) restarts every
    worker, and all resume from the chief's last checkpoint.
    """
    run = Run(
        tmp_path,
        "cluster",
        preprocessed,
        reuters_slice,
        model={"dropout": 0.0},
        checkpoint_every_steps=2,
    )
    envs, _ = _worker_envs(tmp_path)
    weights = [str(tmp_path / f"w{i}.npz") for i in range(2)]

    def start_cluster(suffix):
        return [
            run.start(step_sleep=0.25, env=env, log_name=f"w{i}{suffix}.txt", weights=weights[i])
            for i, env in enumerate(envs)
        ]

    procs = start_cluster("")
    _kill_mid_epoch(run.cfg, procs, victim=1)
    procs[0].wait(timeout=180)  # the chief notices by itself
    assert procs[0].returncode != 0
    assert "UNAVAILABLE" in run.output(procs[0]) or "Unavailable" in run.output(procs[0])
    # Steps whose collectives finished before the kill may still be
    # checkpointed by the chief, so the resume point is read once it exited.
    position = read_position(run.cfg)
    assert position[0] == 1 and position[1] > 0, position

    procs = start_cluster("-restart")  # the same commands again
    outs = [run.finish(p) for p in procs]
    assert f"resuming at epoch 2, step {position[1]}" in outs[0]
    a, b = run.final_weights(weights[0]), run.final_weights(weights[1])
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "workers ended with different weights"
    assert max_difference(a, layouts[0].final_weights()) < LAYOUT_TOLERANCE
    assert run.summary()["resumed_from"] == list(position)
