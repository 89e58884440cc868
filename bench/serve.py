"""Serving benchmark: the exported SavedModel in-process, `doctags serve`, and the seeds' path.

    python bench/serve.py --config configs/reuters.yaml [--output-dir DIR]

Needs a trained and exported run of the config (``doctags run``). Measures,
in one run, on the Reuters test texts:

- the SavedModel's ``serving_default`` called in-process with raw strings:
  latency at batch 1 (p50, p99) and documents/s at batch 256;
- `doctags serve` started as its own process (loopback, ephemeral ports):
  throughput and latency percentiles of single-text requests from
  concurrent REST and gRPC clients;
- the baseline, the seeds' ``predict_tags``: Python-side cleaning and
  tokenization, one padded id sequence, Keras ``model.predict``, threshold
  and label names in Python (a Keras-Tokenizer-free equivalent).

Prints one table. Goal: raw-string p50 at batch 1 <= 2 ms in-process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from doctags_core.config import load_config  # noqa: E402
from doctags_core.metrics import format_table  # noqa: E402
from doctags_core.stopwords import ENGLISH_STOP_WORDS  # noqa: E402


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def test_texts(cfg) -> list[str]:
    texts = []
    for pattern in cfg.data.input_pattern:
        with gzip.open(pattern, "rt", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if record.get(cfg.data.split_field) == "test":
                    texts.append(record["text"])
    return texts


def bench_in_process(export_dir: str, texts: list[str], calls: int) -> list[dict]:
    import tensorflow as tf

    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    for text in texts[:50]:  # warm-up: tracing, lookup tables, regex compilation
        serve(text=tf.constant([text]))
    latencies = []
    for i in range(calls):
        text = texts[i % len(texts)]
        started = time.perf_counter()
        out = serve(text=tf.constant([text]))
        out["tags"].numpy()
        latencies.append(time.perf_counter() - started)
    rows = [
        {
            "path": "in-process SavedModel, raw strings",
            "batch": 1,
            "requests": calls,
            **percentiles(latencies),
            "docs_s": calls / sum(latencies),
        }
    ]
    # Where the batch-1 time goes: the cleaning + token ids part alone.
    tokenize = tf.saved_model.load(export_dir).signatures["tokenize"]
    for text in texts[:50]:
        tokenize(text=tf.constant([text]))
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        tokenize(text=tf.constant([texts[i % len(texts)]]))["token_ids"].numpy()
        latencies.append(time.perf_counter() - started)
    rows.append(
        {
            "path": "  of which: tokenize signature (cleaning + ids)",
            "batch": 1,
            "requests": calls,
            **percentiles(latencies),
            "docs_s": calls / sum(latencies),
        }
    )
    batches = [texts[i : i + 256] for i in range(0, len(texts) - 255, 256)]
    serve(text=tf.constant(batches[0]))
    latencies = []
    for batch in batches:
        started = time.perf_counter()
        serve(text=tf.constant(batch))["tags"].numpy()
        latencies.append(time.perf_counter() - started)
    rows.append(
        {
            "path": "in-process SavedModel, raw strings",
            "batch": 256,
            "requests": len(batches),
            **percentiles(latencies),
            "docs_s": 256 * len(batches) / sum(latencies),
        }
    )
    return rows


class SeedsTagger:
    """The seeds' predict_tags: Python cleaning + ids, Keras model.predict on one sequence."""

    _STOP = frozenset(ENGLISH_STOP_WORDS)

    def __init__(self, keras_path: str, export_dir: str, sequence_length: int):
        import keras

        self.model = keras.models.load_model(keras_path)
        assets = os.path.join(export_dir, "assets")
        vocab = [line.rstrip("\n") for line in open(os.path.join(assets, "vocab.txt"))]
        # TextVectorization: 0 pads, 1 is OOV, then the vocabulary in order.
        self.index = {token: i + 2 for i, token in enumerate(vocab)}
        self.labels = [line.strip() for line in open(os.path.join(assets, "labels.txt"))]
        self.threshold = json.load(open(os.path.join(assets, "thresholds.json")))["threshold"]
        self.length = sequence_length

    def clean(self, text: str) -> list[str]:
        text = re.sub(r"https?://\S+|www\.\S+", " ", text)
        text = re.sub(r"<[^>]+>", " ", text).lower()
        text = re.sub(r"\S*\d\S*", " ", text)
        text = re.sub(r"[^\w\s]|_", " ", text)
        return [t for t in text.split() if t not in self._STOP]

    def predict_tags(self, text: str) -> list[tuple[str, float]]:
        ids = [self.index.get(t, 1) for t in self.clean(text)][: self.length]
        sequence = np.zeros((1, self.length), dtype="int64")
        sequence[0, : len(ids)] = ids
        scores = self.model.predict(sequence, verbose=0)[0]
        order = np.argsort(-scores)
        return [(self.labels[i], float(scores[i])) for i in order if scores[i] >= self.threshold]


def bench_seeds(cfg, texts: list[str], calls: int) -> list[dict]:
    tagger = SeedsTagger(
        os.path.join(cfg.model_dir, "model.keras"), cfg.export_dir, cfg.model.sequence_length
    )
    for text in texts[:5]:
        tagger.predict_tags(text)
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        tagger.predict_tags(texts[i % len(texts)])
        latencies.append(time.perf_counter() - started)
    seeds = {
        "path": "seeds' predict_tags (Python tokenize + Keras model.predict)",
        "batch": 1,
        "requests": calls,
        **percentiles(latencies),
        "docs_s": calls / sum(latencies),
    }
    # Where the batch-1 time goes: the same network, called as a graph on ids.
    import tensorflow as tf

    forward = tf.function(lambda ids: tagger.model(ids, training=False))
    sequences = []
    for text in texts[:200]:
        ids = [tagger.index.get(t, 1) for t in tagger.clean(text)][: tagger.length]
        sequences.append(tf.constant([ids + [0] * (tagger.length - len(ids))], tf.int64))
    for sequence in sequences[:20]:
        forward(sequence)
    latencies = []
    for i in range(calls * 5):
        started = time.perf_counter()
        forward(sequences[i % len(sequences)]).numpy()
        latencies.append(time.perf_counter() - started)
    network = {
        "path": "  network alone (Keras model in a tf.function, on ids)",
        "batch": 1,
        "requests": calls * 5,
        **percentiles(latencies),
        "docs_s": len(latencies) / sum(latencies),
    }
    return [seeds, network]


def start_server(base_path: str, args) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "doctags", "serve", "--model-base-path", base_path]
    command += ["--rest-port", "0", "--grpc-port", "0"]
    command += ["--max-batch-size", str(args.max_batch_size)]
    command += ["--batch-timeout-micros", str(args.batch_timeout_micros)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    rest = re.search(r"REST (http://[\d.]+:\d+)/", line)
    target = re.search(r"gRPC ([\d.]+:\d+)", line)
    if not (rest and target):
        process.kill()
        raise RuntimeError(f"doctags serve did not start: {line!r}")
    return process, rest[1], target[1]


def bench_server(kind: str, make_client, texts, requests_total: int, clients: int) -> dict:
    counter = iter(range(requests_total))
    lock = threading.Lock()
    latencies, errors = [], []

    def worker():
        client = make_client()
        client.tag(texts[:1])  # connection set up before timing
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            try:
                client.tag([texts[i % len(texts)]])
            except Exception as e:  # counted in the table  # noqa: BLE001
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "path": f"doctags serve {kind}, {clients} concurrent clients",
        "batch": 1,
        "requests": requests_total,
        **percentiles(latencies),
        "docs_s": len(latencies) / wall,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "reuters.yaml"))
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--calls", type=int, default=2000, help="in-process batch-1 calls")
    parser.add_argument("--seed-calls", type=int, default=300)
    parser.add_argument("--server-requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout-micros", type=int, default=0)
    args = parser.parse_args()
    overrides = {"output_dir": os.path.abspath(args.output_dir)} if args.output_dir else None
    cfg = load_config(args.config, overrides)
    if not os.path.exists(os.path.join(cfg.export_dir, "saved_model.pb")):
        raise SystemExit(f"no export at {cfg.export_dir}: run `doctags run --config {args.config}`")
    texts = test_texts(cfg)
    load_before = os.getloadavg()
    rows = bench_in_process(cfg.export_dir, texts, args.calls)
    rows += bench_seeds(cfg, texts, args.seed_calls)

    from serving.client import GrpcClient, RestClient

    process, rest_url, target = start_server(os.path.dirname(cfg.export_dir), args)
    name = cfg.export.model_name
    try:
        for kind, factory in (
            ("REST", lambda: RestClient(rest_url, name)),
            ("gRPC", lambda: GrpcClient(target, name)),
        ):
            rows.append(bench_server(kind, factory, texts, args.server_requests, args.clients))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    p50 = rows[0]["p50_ms"]
    for row in rows:
        row.setdefault("errors", 0)
        row.update(
            p50_ms=f"{row['p50_ms']:.2f}",
            p99_ms=f"{row['p99_ms']:.2f}",
            docs_s=f"{row['docs_s']:.0f}",
        )
    print(
        f"\nmodel {cfg.export_dir} ({cfg.model.family}, sequence_length "
        f"{cfg.model.sequence_length}); {len(texts)} Reuters test texts; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after (shared machine)"
    )
    print(format_table(rows, ["path", "batch", "requests", "p50_ms", "p99_ms", "docs_s", "errors"]))
    print(
        f"goal raw-string p50 at batch 1 <= 2 ms in-process: {p50:.2f} ms -> "
        f"{'met' if p50 <= 2 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
