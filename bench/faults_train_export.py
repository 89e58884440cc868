"""Train and export killed while they save and publish (Issue 12); one line per scenario.

    python bench/faults_train_export.py [--workdir DIR] [--kills 6]
                                        [--scenarios publish_swap,export_sigkill,train_sigkill]

Builds (once, cached in ``--workdir``) a tiny model trained on a slice of the
bundled Reuters corpus with ``doctags preprocess/train/export``. Then:

- ``publish_swap``: file system only. A copy of the real version folder is
  overwritten 300 times while a thread reads every file of ``1/`` in a loop:
  with doctags' publish (one ``renameat2`` exchange) and with the previous
  export's delete-then-rename. Reported: reads, reads that found a file
  missing. Pass: none with the exchange, and some with delete-then-rename
  (the reader can see a gap, so its zero means something).
- ``export_sigkill``: ``doctags export --overwrite`` is SIGKILLed ``--kills``
  times (half at a random time after start, half just around the publish:
  a random 0-3 s after the staging folder gets its metadata) while a thread
  checks every file of ``1/`` about every millisecond; then one export runs
  to its end. Reported: kills before and after the publish, checks, checks
  that found a file missing, hidden ``.export-*`` folders before and after
  the last export, its exit code, and whether TF Serving's session loader
  runs the final ``1/``. Pass: no missing file, exit 0, at most one folder
  left (the version it replaced) and the loader runs it.
- ``train_sigkill``: ``doctags train`` (a new run over the finished one) is
  SIGKILLed the moment its temporary model file appears (while Keras
  writes it). Reported: the kill's exit code, ``model.keras`` (the previous
  one, loadable?), ``thresholds.json`` (removed until the run ends),
  ``doctags export``'s exit code and first words, then the same train
  command again (it resumes) and export. Pass: the previous model loads,
  export refuses with "no finished training run", the resumed run and its
  export exit 0.

Functions return `Result` rows, as in ``bench/faults_serve.py``, so a bigger
fault script can import and run them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faults_serve import MODEL, Result, _reuters_slice  # noqa: E402


def doctags(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m doctags ARGS`` from this repository."""
    return subprocess.run(
        [sys.executable, "-m", "doctags", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ensure_trained(workdir: str) -> str:
    """The config of a tiny model trained and exported once per workdir."""
    import yaml

    path = os.path.join(workdir, "config.yaml")
    export = os.path.join(workdir, "run", "export", MODEL, "1", "saved_model.pb")
    if os.path.exists(export):
        return path
    os.makedirs(workdir, exist_ok=True)
    config = {
        "name": "faults",
        "output_dir": os.path.join(workdir, "run"),
        "data": {
            "input_pattern": _reuters_slice(os.path.join(workdir, "slice.jsonl.gz")),
            "split_field": "split",
        },
        "preprocess": {"batch_size": 128, "vocab_size": 5000, "min_count": 1, "num_shards": 2},
        "model": {"family": "dnn", "sequence_length": 64, "embedding_dim": 16, "hidden_units": 16},
        "training": {"batch_size": 32, "epochs": 2, "early_stopping_patience": 1},
        "export": {"model_name": MODEL, "version": 1},
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    for command in ("preprocess", "train", "export"):
        done = doctags(command, "--config", path)
        if done.returncode:
            raise SystemExit(f"doctags {command} failed:\n{done.stderr[-3000:]}")
    return path


def _paths(config: str) -> tuple[str, str]:
    """``(model dir, version 1 dir)`` of the config."""
    from doctags_core.config import load_config

    cfg = load_config(config)
    return cfg.model_dir, cfg.export_dir


# watching a version folder ----------------------------------------------------------
def version_files(version_dir: str) -> list[str]:
    """Every file of a version, relative to it (what a complete version holds)."""
    return sorted(
        os.path.relpath(os.path.join(root, name), version_dir)
        for root, _, names in os.walk(version_dir)
        for name in names
    )


class VersionWatcher(threading.Thread):
    """Checks in a loop that every file of a complete version is there.

    Args:
        version_dir: The folder a server would load (``base/1``).
        files: The files a complete version holds.
        pause: Seconds between checks.
    """

    def __init__(self, version_dir: str, files: list[str], pause: float = 0.001):
        super().__init__(daemon=True)
        self.version_dir, self.files, self.pause = version_dir, files, pause
        self.checks = 0
        self.missing: list[str] = []  # the first missing file of each failed check
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.checks += 1
            for name in self.files:
                if not os.path.exists(os.path.join(self.version_dir, name)):
                    self.missing.append(name)
                    break
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def hidden_folders(base: str) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.startswith(".export-"))


# scenarios --------------------------------------------------------------------------
def publish_swap(config: str, rounds: int = 300) -> Result:
    """The exchange against delete-then-rename, under a reader of every file."""
    from doctags_core import version_publish

    _, version = _paths(config)
    files = version_files(version)
    sandbox = os.path.join(os.path.dirname(os.path.dirname(version)), "swap-sandbox")
    shutil.rmtree(sandbox, ignore_errors=True)
    target = os.path.join(sandbox, "1")
    shutil.copytree(version, target)

    def exchange(staging):
        version_publish.publish_version(staging, target, overwrite=True)

    def delete_then_rename(staging):
        shutil.rmtree(target)
        os.rename(staging, target)

    numbers = {}
    for name, publish in (("exchange", exchange), ("delete_rename", delete_then_rename)):
        watcher = VersionWatcher(target, files, pause=0)
        watcher.start()
        for _ in range(rounds):
            version_publish.remove_leftovers(sandbox)  # as each export does first
            staging = version_publish.staging_dir(sandbox)
            os.rmdir(staging)
            shutil.copytree(version, staging)
            publish(staging)
        watcher.stop()
        numbers[f"{name}_reads"] = watcher.checks
        numbers[f"{name}_missing"] = len(watcher.missing)
    shutil.rmtree(sandbox)
    passed = numbers["exchange_missing"] == 0 and numbers["delete_rename_missing"] > 0
    return Result("publish_swap", numbers, passed)


def _kill_export(config: str, base: str, around_publish: bool, rng: random.Random) -> int:
    """Starts ``doctags export --overwrite`` and SIGKILLs it; returns its exit code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "doctags", "export", "--config", config, "--overwrite"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.time()
    deadline = started + rng.uniform(2, 20)
    while process.poll() is None:
        if around_publish:
            staged = [
                os.path.join(base, n, "assets.extra", "model_metadata.json")
                for n in hidden_folders(base)
            ]
            if any(os.path.exists(p) for p in staged):
                time.sleep(rng.uniform(0, 3))
                break
        elif time.time() >= deadline:
            break
        time.sleep(0.002)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait()


def export_sigkill(config: str, kills: int = 6, seed: int = 0) -> Result:
    """SIGKILLed exports while a watcher checks ``1/``, then one export to its end."""
    from doctags_core.session_model import SessionModel

    _, version = _paths(config)
    base = os.path.dirname(version)
    files = version_files(version)
    rng = random.Random(seed)
    watcher = VersionWatcher(version, files)
    watcher.start()
    before = after = finished = 0
    for i in range(kills):
        inode = os.stat(version).st_ino
        code = _kill_export(config, base, around_publish=i % 2 == 1, rng=rng)
        if code == 0:
            finished += 1
        elif os.stat(version).st_ino == inode:
            before += 1
        else:
            after += 1
    left_before = len(hidden_folders(base))
    final = doctags("export", "--config", config, "--overwrite")
    watcher.stop()
    left_after = hidden_folders(base)
    with SessionModel(version) as session:
        loads = session.replay_warmup() > 0
    numbers = {
        "kills_before_publish": before,
        "kills_after_publish": after,
        "finished_unkilled": finished,
        "checks": watcher.checks,
        "missing": len(watcher.missing),
        "hidden_before_last": left_before,
        "hidden_after_last": len(left_after),
        "last_exit": final.returncode,
        "loads": loads,
    }
    passed = (
        not watcher.missing
        and final.returncode == 0
        and len(left_after) <= 1
        and loads
        and version_files(version) == files
    )
    return Result("export_sigkill", numbers, passed)


def _kill_train_while_saving(config: str, model_dir: str, epochs: int) -> tuple[int, bool]:
    """Runs train and SIGKILLs it when its temporary model file appears."""
    from doctags_core.atomic_files import remove_leftovers

    remove_leftovers(model_dir)  # a leftover of an earlier kill is not this run saving
    process = subprocess.Popen(
        [sys.executable, "-m", "doctags", "train", "--config", config]
        + ["--set", f"training.epochs={epochs}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    caught = False
    while process.poll() is None:
        names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
        if any(n.startswith(".tmp-") and n.endswith("model.keras") for n in names):
            process.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.0005)
    return process.wait(), caught


def _model_loads(path: str) -> bool:
    code = f"import keras; keras.models.load_model({path!r}); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip().endswith("ok")


def train_sigkill(config: str, tries: int = 3) -> Result:
    """Train killed while Keras writes the model: the old model stays, export refuses."""
    model_dir, _ = _paths(config)
    model_file = os.path.join(model_dir, "model.keras")
    size_before = os.path.getsize(model_file)
    code, caught = 0, False
    for epochs in range(3, 3 + tries):  # a new config each try: a run from scratch
        code, caught = _kill_train_while_saving(config, model_dir, epochs)
        if caught:
            break
    loads = _model_loads(model_file)
    thresholds = os.path.exists(os.path.join(model_dir, "thresholds.json"))
    refused = doctags("export", "--config", config, "--overwrite")
    said = next((x for x in refused.stderr.splitlines() if "error:" in x), "")
    resumed = doctags("train", "--config", config, "--set", f"training.epochs={epochs}")
    exported = doctags("export", "--config", config, "--overwrite")
    numbers = {
        "train_exit": code,
        "caught_saving": caught,
        "model_bytes_before": size_before,
        "model_bytes_after_kill": os.path.getsize(model_file),
        "model_loads": loads,
        "thresholds_json": thresholds,
        "export_exit": refused.returncode,
        "export_says": repr(said.split("error: ", 1)[-1].replace(model_dir, "MODEL")[:60]),
        "resumed_train_exit": resumed.returncode,
        "then_export_exit": exported.returncode,
    }
    passed = (
        caught
        and code == -signal.SIGKILL
        and loads
        and not thresholds
        and refused.returncode == 2
        and "no finished training run" in said
        and resumed.returncode == 0
        and exported.returncode == 0
    )
    return Result("train_sigkill", numbers, passed)


SCENARIOS = {
    "publish_swap": publish_swap,
    "export_sigkill": export_sigkill,
    "train_sigkill": train_sigkill,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/doctags-faults-train-export")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    started = time.time()
    config = ensure_trained(args.workdir)
    print(f"tiny model ready in {time.time() - started:.0f}s ({args.workdir})", flush=True)
    failed = 0
    for name in args.scenarios.split(","):
        started = time.time()
        if name == "export_sigkill":
            result = export_sigkill(config, args.kills)
        else:
            result = SCENARIOS[name](config)
        result.numbers["seconds"] = round(time.time() - started)
        print(result.line(15), flush=True)
        failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
