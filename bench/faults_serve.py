"""Fault scenarios against a real `doctags serve` process on loopback; one line each.

    python bench/faults_serve.py [--workdir DIR] [--clients 4000] [--repo PATH]
                                 [--scenarios slow_clients,broken_newest,slow_copy]

Builds (once, cached in ``--workdir``) a tiny export: a small model trained on
a slice of the bundled Reuters corpus with ``doctags preprocess/train/export``.
Then, each against a fresh ``doctags serve`` subprocess whose stderr goes to a
log file:

- ``slow_clients``: ``--clients`` clients open connections, trickle header
  lines and disconnect. Reported: normal-request p99 (a new connection per
  request, 4 clients) during the attack and over the 5 s right after it,
  the server process's peak and final thread count, tracebacks and
  dropped-connection lines in its log. Pass: p99 after < 1 s with no
  error, tracebacks 0, threads bounded.
- ``broken_newest``: versions 1 and 2 good and 3 broken at start. Pass: the
  default version is 2, ``/versions/2`` answers, 3 ends with the loader's
  message.
- ``slow_copy``: version 2 is copied in while 1 serves: ``saved_model.pb``
  first, the rest 3 s later. Pass: 2 serves within 5 s of the copy's end,
  and no request failed meanwhile.

``--repo`` runs the server from another checkout (e.g. the previous revision
as a baseline; flags it does not know are left out). Functions return
`Result` rows so a bigger fault script can import and run them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
REUTERS = os.path.join(REPO, "data", "reuters21578", "reuters21578-modapte.jsonl.gz")
MODEL = "tags"
TEXTS = ["Crude oil prices rose sharply in OPEC talks", "Net profit 5 mln dlrs vs 3 mln"]


@dataclass
class Result:
    """One scenario's outcome: its numbers and whether it passed."""

    name: str
    numbers: dict = field(default_factory=dict)
    passed: bool = False

    def line(self, width: int = 14) -> str:
        """``name numbers PASS|FAIL``, the name padded to ``width`` columns."""
        shown = " ".join(f"{k}={v}" for k, v in self.numbers.items())
        return f"{self.name:<{width}} {shown}  {'PASS' if self.passed else 'FAIL'}"


# the tiny export ------------------------------------------------------------------
def _reuters_slice(path: str, train: int = 300, test: int = 100) -> str:
    """The first ``train``/``test`` documents of each split, as gzip JSONL."""
    seen = collections.Counter()
    with gzip.open(REUTERS, "rt", encoding="utf-8") as src, gzip.open(path, "wt") as out:
        for line in src:
            split = json.loads(line)["split"]
            if seen[split] < {"train": train, "test": test}[split]:
                seen[split] += 1
                out.write(line)
    return path


def ensure_export(workdir: str) -> str:
    """A tiny trained export's version directory, built once per workdir."""
    export = os.path.join(workdir, "run", "export", MODEL, "1")
    if os.path.exists(os.path.join(export, "saved_model.pb")):
        return export
    import yaml

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
        "training": {"batch_size": 32, "epochs": 3, "early_stopping_patience": 1},
        "export": {"model_name": MODEL, "version": 1},
    }
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    for command in ("preprocess", "train", "export"):
        subprocess.run(
            [sys.executable, "-m", "doctags", command, "--config", path],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
            check=True,
            capture_output=True,
        )
    return export


# the server process -------------------------------------------------------------------
class Server:
    """`doctags serve` as a subprocess of ``repo``, stderr to ``log_path``."""

    def __init__(self, repo: str, base: str, log_path: str, flags: list[str]):
        supported = _supported_flags(repo)
        command = [sys.executable, "-m", "doctags", "serve", "--model-base-path", base]
        command += ["--rest-port", "0", "--grpc-port", "0"]
        for flag, value in zip(flags[::2], flags[1::2]):
            if flag in supported:
                command += [flag, value]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            command,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = self.process.stdout.readline()
        rest = re.search(r"REST (http://[\d.]+:\d+)/", line)
        grpc = re.search(r"gRPC ([\d.]+:\d+)", line)
        if not (rest and grpc):
            self.stop()
            raise RuntimeError(f"doctags serve did not start: {line!r}; see {log_path}")
        self.rest_url, self.grpc_target = rest[1], grpc[1]
        self.ready_line = line.strip()

    def threads(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M)[1])

    def log_text(self) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _supported_flags(repo: str) -> set[str]:
    help_text = subprocess.run(
        [sys.executable, "-m", "doctags", "serve", "--help"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": repo},
        capture_output=True,
        text=True,
    ).stdout
    return set(re.findall(r"--[a-z][a-z-]+", help_text))


def _predict(url: str, timeout: float = 30.0) -> float:
    """One REST predict on a new connection; its latency in seconds (raises on failure)."""
    import requests

    started = time.perf_counter()
    answer = requests.post(
        f"{url}/v1/models/{MODEL}:predict",
        json={"instances": TEXTS[:1]},
        headers={"Connection": "close"},
        timeout=timeout,
    )
    answer.raise_for_status()
    return time.perf_counter() - started


def _measure(url: str, seconds: float, clients: int = 4) -> tuple[list[float], list[str]]:
    """Latencies of requests started within ``seconds`` from ``clients`` threads, and errors."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                _predict(url)
            except Exception as e:  # reported  # noqa: BLE001
                with lock:
                    errors.append(type(e).__name__)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def _p99_ms(latencies: list[float]) -> float:
    import numpy as np

    return round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else float("nan")


# scenario: slow clients ------------------------------------------------------------------
async def _slow_client(host, port, lines, pause, connects, counts):
    async with connects:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, asyncio.TimeoutError):
            counts["connect_failed"] += 1
            return
    try:
        writer.write(b"POST /v1/models/tags:predict HTTP/1.1\r\nHost: faults\r\n")
        for i in range(lines):
            await asyncio.sleep(pause)
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            await writer.drain()
        counts["trickled"] += 1
    except OSError:
        counts["cut_by_server"] += 1
    finally:
        writer.close()


async def _slow_clients(host: str, port: int, clients: int, lines: int, pause: float) -> dict:
    counts = collections.Counter()
    connects = asyncio.Semaphore(256)  # connection attempts in flight, not connections
    await asyncio.gather(
        *(_slow_client(host, port, lines, pause, connects, counts) for _ in range(clients))
    )
    return dict(counts)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def slow_clients(server: Server, clients: int = 4000) -> Result:
    """Clients trickle headers then disconnect; normal requests measured during and after."""
    _raise_fd_limit()
    _predict(server.rest_url)
    threads, stop = [server.threads()], threading.Event()

    def sample():
        while not stop.wait(0.1):
            threads.append(server.threads())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    during: dict = {}
    background = threading.Thread(
        target=lambda: during.update(zip(("lat", "err"), _measure(server.rest_url, 3.0, 2))),
        daemon=True,
    )
    host, port = re.match(r"http://([\d.]+):(\d+)", server.rest_url).groups()
    started = time.monotonic()
    background.start()
    counts = asyncio.run(_slow_clients(host, int(port), clients, lines=3, pause=0.5))
    attack_s = time.monotonic() - started
    background.join()
    after, errors = _measure(server.rest_url, 5.0)  # requests started within 5 s of the end
    time.sleep(1.0)
    stop.set()
    sampler.join()
    log = server.log_text()
    numbers = {
        "clients": clients,
        "attack_s": round(attack_s, 1),
        "p99_during_ms": _p99_ms(during.get("lat", [])),
        "errors_during": len(during.get("err", [])),
        "p99_after_ms": _p99_ms(after),
        "requests_after": len(after),
        "errors_after": len(errors),
        "threads_peak": max(threads),
        "threads_end": server.threads(),
        "tracebacks": log.count("Traceback (most recent call last)"),
        "drop_lines": log.count("dropped connection"),
        **{k: v for k, v in counts.items() if v},
    }
    passed = (
        numbers["p99_after_ms"] < 1000
        and not errors
        and numbers["tracebacks"] == 0
        and numbers["threads_peak"] < 200
    )
    return Result("slow_clients", numbers, passed)


# scenarios: versions ---------------------------------------------------------------------------
def _grpc_version(target: str, version: int | None = None) -> int | str:
    """The version answering a gRPC Predict, or the error's status code."""
    from serving.client import GrpcClient
    from serving.errors import ServingError

    try:
        with GrpcClient(target, MODEL, version=version, timeout=30) as client:
            return client.predict_response(TEXTS).model_spec.version.value
    except ServingError as e:
        return e.code


def _status(url: str) -> dict[int, dict]:
    import requests

    answer = requests.get(f"{url}/v1/models/{MODEL}", timeout=30).json()
    return {int(s["version"]): s for s in answer.get("model_version_status", [])}


def broken_newest(repo: str, export: str, workdir: str) -> Result:
    """Versions 1, 2 good and 3 broken at start: 2 must serve, 3 end with the loader's message."""
    base = os.path.join(workdir, "broken", MODEL)
    shutil.rmtree(os.path.dirname(base), ignore_errors=True)
    for version in (1, 2):
        shutil.copytree(export, os.path.join(base, str(version)))
    os.makedirs(os.path.join(base, "3"))
    with open(os.path.join(base, "3", "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    flags = ["--max-num-load-retries", "1", "--load-retry-interval-micros", "1000000"]
    started = time.monotonic()
    server = Server(repo, base, os.path.join(workdir, "broken.log"), flags)
    try:
        ready_s = time.monotonic() - started
        default = _grpc_version(server.grpc_target)
        pinned = _grpc_version(server.grpc_target, version=2)
        time.sleep(2.5)  # past the one retry
        v3 = _status(server.rest_url).get(3, {})
        message = v3.get("status", {}).get("error_message", "")
    finally:
        server.stop()
    numbers = {
        "ready_s": round(ready_s, 1),
        "default_version": default,
        "versions_2": pinned,
        "v3_state": v3.get("state"),
        "v3_message": json.dumps(message.rpartition("): ")[2][:48]),
    }
    passed = default == 2 and pinned == 2 and v3.get("state") == "END" and "parse" in message
    return Result("broken_newest", numbers, passed)


def slow_copy(repo: str, export: str, workdir: str) -> Result:
    """Version 2 copied in slowly while 1 serves: 2 must serve once the copy is complete."""
    base = os.path.join(workdir, "copy", MODEL)
    shutil.rmtree(os.path.dirname(base), ignore_errors=True)
    shutil.copytree(export, os.path.join(base, "1"))
    flags = ["--file-system-poll-wait-seconds", "0.5"]
    flags += ["--max-num-load-retries", "30", "--load-retry-interval-micros", "1000000"]
    server = Server(repo, base, os.path.join(workdir, "copy.log"), flags)
    errors, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                _predict(server.rest_url)
            except Exception as e:  # reported  # noqa: BLE001
                errors.append(type(e).__name__)
            time.sleep(0.05)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        target = os.path.join(base, "2")
        os.makedirs(target)
        shutil.copy(os.path.join(export, "saved_model.pb"), target)
        time.sleep(3.0)  # the copy is slow: the rest arrives later
        for name in os.listdir(export):
            if os.path.isdir(os.path.join(export, name)):
                shutil.copytree(os.path.join(export, name), os.path.join(target, name))
        copied = time.monotonic()
        served_s = None
        while time.monotonic() - copied < 20:
            if _grpc_version(server.grpc_target) == 2:
                served_s = round(time.monotonic() - copied, 1)
                break
            time.sleep(0.1)
        v2 = _status(server.rest_url).get(2, {})
    finally:
        stop.set()
        loader.join()
        server.stop()
    numbers = {
        "served_after_copy_s": served_s,
        "v2_state": v2.get("state"),
        "request_errors": len(errors),
    }
    passed = served_s is not None and served_s < 5 and not errors
    return Result("slow_copy", numbers, passed)


def main(argv: list[str] | None = None) -> int:
    """Runs the scenarios and prints one line each; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "doctags-faults"))
    parser.add_argument("--clients", type=int, default=4000)
    parser.add_argument("--repo", default=REPO, help="checkout whose `doctags serve` runs")
    parser.add_argument("--scenarios", default="slow_clients,broken_newest,slow_copy")
    args = parser.parse_args(argv)
    repo = os.path.abspath(args.repo)
    export = ensure_export(args.workdir)
    print(f"server from {repo}; export {export}", flush=True)
    results = []
    for name in args.scenarios.split(","):
        if name == "slow_clients":
            base = os.path.dirname(export)
            server = Server(repo, base, os.path.join(args.workdir, "slow.log"), [])
            try:
                result = slow_clients(server, args.clients)
            finally:
                server.stop()
        elif name == "broken_newest":
            result = broken_newest(repo, export, args.workdir)
        elif name == "slow_copy":
            result = slow_copy(repo, export, args.workdir)
        else:
            raise SystemExit(f"unknown scenario {name!r}")
        print(result.line(), flush=True)
        results.append(result)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
