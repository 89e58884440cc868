"""Batch tagging benchmark: the Beam job (`doctags predict --output`) vs in-process batches.

    python bench/batch_tagging.py [--documents 100000] [--model EXPORT_DIR] [--work DIR]

Both rows tag the same synthetic corpus (`doctags synth`, JSONL.gz shards)
with the same export, in one run, one after the other:

- ``doctags predict --model M --input GLOB --output DIR``: the Beam job of
  `serving.batch_tagging` (RunInference, in-process FnApiRunner), run as the
  user runs it, in its own process: reading, parsing, tagging, writing JSONL,
  dead letters and the summary;
- in-process: `doctags_core.tagger.Tagger` (the same session-based loader)
  over the corpus' texts at batch 256, texts already in memory (the floor:
  model time only).

Without ``--model`` a small model is trained first on a separate 5,000-document
corpus of the same generator (dnn, 1 epoch: the model's quality is not the
point, its cost per document is that of a fast family). Documents/s is wall
time; peak RSS is each process's VmHWM.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from doctags_core.metrics import format_table  # noqa: E402

DOCTAGS = [sys.executable, "-m", "doctags"]


def run_measured(command: list[str]) -> tuple[float, float]:
    """Runs a command; ``(wall seconds, peak RSS MiB)`` of its process (VmHWM, polled)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO)
    peak = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    if process.returncode:
        raise SystemExit(f"{command[:4]} failed with {process.returncode}")
    return time.perf_counter() - started, peak / 1024


def synth(out: str, documents: int, seed: int) -> str:
    if not glob.glob(os.path.join(out, "corpus-*.jsonl.gz")):
        subprocess.run(
            [*DOCTAGS, "synth", "--out", out, "--documents", str(documents), "--seed", str(seed)],
            check=True,
            cwd=REPO,
        )
    return os.path.join(out, "corpus-*.jsonl.gz")


def small_model(work: str) -> str:
    """A fast-family export trained on a separate small corpus of the same generator."""
    export = os.path.join(work, "model", "export", "bench", "1")
    if os.path.exists(export):
        return export
    corpus = synth(os.path.join(work, "train-corpus"), 5000, seed=1)
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        json.dump(
            {
                "name": "bench",
                "output_dir": os.path.join(work, "model"),
                "data": {"input_pattern": corpus, "id_field": "id", "split_field": None},
                "model": {"family": "dnn", "sequence_length": 200},
                "training": {"epochs": 1, "batch_size": 128},
                "export": {"model_name": "bench"},
            },
            f,
        )
    for command in ("preprocess", "train", "export"):
        subprocess.run([*DOCTAGS, command, "--config", config], check=True, cwd=REPO)
    return export


def read_texts(pattern: str) -> list[str]:
    texts = []
    for path in sorted(glob.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def in_process(model: str, texts: list[str]) -> dict:
    from doctags_core.tagger import Tagger

    tagger = Tagger(model)
    tagger.predict(texts[:256])  # warm-up
    started = time.perf_counter()
    tagger.predict(texts, batch_size=256)
    seconds = time.perf_counter() - started
    return {"docs": len(texts), "wall_s": seconds, "docs_s": len(texts) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--model", help="an export to use (default: train a small one)")
    parser.add_argument("--work", default="/tmp/doctags-batch-tagging")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    model = args.model or small_model(args.work)
    corpus = synth(os.path.join(args.work, f"corpus-{args.documents}"), args.documents, seed=7)
    output = os.path.join(args.work, "tagged")
    command = [*DOCTAGS, "predict", "--model", model, "--input", corpus, "--output", output]
    wall, rss = run_measured([*command, "--overwrite"])
    summary = json.load(open(os.path.join(output, "summary.json")))
    rows = [
        {
            "system": "doctags predict --output (Beam RunInference, FnApiRunner)",
            "docs": summary["rows_written"],
            "wall_s": wall,
            "docs_s": summary["rows_written"] / wall,
            "peak_rss_mib": rss,
        }
    ]
    texts = read_texts(corpus)
    row = in_process(model, texts)
    rows.append({"system": "in-process Tagger, batch 256 (texts in memory)", **row})
    print()
    print(f"model: {model}")
    print(format_table(rows, ["system", "docs", "wall_s", "docs_s", "peak_rss_mib"]))


if __name__ == "__main__":
    main()
