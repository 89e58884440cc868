"""Preprocessing throughput and memory: the doctags Beam job vs the seeds' approach.

    python bench/preprocess.py --documents 100000 1000000 --workdir /tmp/doctags-scale

For each corpus size it generates (or reuses) a synthetic corpus
(`doctags_core.synth`, sharded JSONL.gz, fixed seed) and runs, one after the
other on the same files and the same cores:

* ``doctags``: the real ``doctags preprocess`` (DirectRunner, the given
  ``direct_running_mode``s), TFRecords, vocabularies and metadata written;
* ``seeds``: the seeds' approach: per document, Python ``re`` + BeautifulSoup
  cleaning, an in-memory ``Counter`` word count, cleaned texts kept in a
  list (what the seeds fed their vectorizer); nothing written.

Each runs in its own process; peak RSS is the sum over its process tree
(workers included), sampled every 0.25 s. Wall time includes start-up
(imports, pipeline construction), so documents/s is end to end. Prints one
table with doctags/seeds throughput ratios. The machine load average is
printed too: on a shared machine, compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


# ---------------------------------------------------------------- seeds' approach
def seeds_baseline(pattern: str, text_fields: list[str]) -> dict:
    """The seeds' preprocessing: per-document regex + BeautifulSoup, Counter."""
    import gzip
    import re
    from collections import Counter

    from bs4 import BeautifulSoup

    from doctags_core.stopwords import ENGLISH_STOP_WORDS

    stop = set(ENGLISH_STOP_WORDS)
    url = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
    contractions = [
        (re.compile(p, re.IGNORECASE), r)
        for p, r in [
            (r"[\u2018\u2019\u02bc`]", "'"),
            (r"\bwon't\b", "will not"),
            (r"\bcan't\b", "can not"),
            (r"n't\b", " not"),
            (r"'re\b", " are"),
            (r"'ll\b", " will"),
            (r"'ve\b", " have"),
            (r"'d\b", " would"),
            (r"'m\b", " am"),
            (r"'s\b", ""),
        ]
    ]
    digits = re.compile(r"\S*\d\S*")
    non_letters = re.compile(r"[^\w\s]|[\d_]+")

    def clean(text: str) -> list[str]:
        text = url.sub(" ", text)
        text = BeautifulSoup(text, "html.parser").get_text(" ")
        text = text.lower()
        for pattern, rewrite in contractions:
            text = pattern.sub(rewrite, text)
        text = digits.sub(" ", text)
        text = non_letters.sub(" ", text)
        return [w for w in text.split() if w not in stop]

    started = time.perf_counter()
    counts: Counter = Counter()
    cleaned: list[str] = []
    for path in sorted(glob.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                tokens = clean("\n".join(doc[k] for k in text_fields if doc.get(k)))
                counts.update(tokens)
                cleaned.append(" ".join(tokens))
    seconds = time.perf_counter() - started
    return {"documents": len(cleaned), "seconds": seconds, "distinct_tokens": len(counts)}


# ---------------------------------------------------------------- measurement
def run_measured(cmd: list[str], env=None) -> tuple[float, float, float, int, str]:
    """Runs ``cmd``; returns (wall s, CPU s, peak tree RSS MiB, exit code, stdout).

    CPU seconds (user + system of the process and the descendants it
    waited for) are less sensitive than wall time to other jobs on a shared
    machine.
    """
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out_path = f"/tmp/bench-preprocess-{os.getpid()}.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.25)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out_path) as f:
        text = f.read()
    os.remove(out_path)
    return wall, cpu, peak / 2**20, proc.returncode, text


def ensure_corpus(workdir: str, n: int, seed: int) -> str:
    from doctags_core import synth

    out = os.path.join(workdir, f"corpus-{n}")
    spec = synth.SynthSpec(documents=n, seed=seed)
    manifest = os.path.join(out, "corpus.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            if json.load(f)["spec"] == synth.dataclasses.asdict(spec):
                return os.path.join(out, "corpus-*.jsonl.gz")
    started = time.perf_counter()
    synth.write_corpus(spec, out, "jsonl", workers=1)
    print(f"generated {n} documents in {time.perf_counter() - started:.0f}s -> {out}", flush=True)
    return os.path.join(out, "corpus-*.jsonl.gz")


def write_config(workdir: str, n: int, pattern: str, mode: str, workers: int, batch: int) -> str:
    import yaml

    path = os.path.join(workdir, f"bench-{n}-{mode}.yaml")
    cfg = {
        "name": f"bench-{n}",
        "output_dir": os.path.join(workdir, f"run-{n}-{mode}"),
        "data": {"input_pattern": pattern, "text_fields": ["title", "text"]},
        "preprocess": {
            "runner": "DirectRunner",
            "direct_running_mode": mode,
            "direct_num_workers": workers,
            "batch_size": batch,
        },
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/doctags-scale")
    parser.add_argument("--modes", default="in_memory", help="comma-separated DirectRunner modes")
    parser.add_argument("--workers", type=int, default=2, help="workers for multi_* modes")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-seeds", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the doctags runs (doctags preprocess --set)",
    )
    parser.add_argument("--seeds-baseline", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()

    if args.seeds_baseline:
        print(json.dumps(seeds_baseline(args.seeds_baseline, ["title", "text"])))
        return 0

    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    print(f"machine: {os.cpu_count()} cores, load average {load()} (shared with other jobs)")
    for n in args.documents:
        pattern = ensure_corpus(args.workdir, n, args.seed)
        for mode in args.modes.split(","):
            workers = 1 if mode == "in_memory" else args.workers
            config = write_config(args.workdir, n, pattern, mode, workers, args.batch_size)
            cmd = [
                os.path.join(REPO, ".venv", "bin", "doctags"),
                "preprocess",
                "--config",
                config,
                *[arg for pair in args.set for arg in ("--set", pair)],
                "--",
                "--runner=DirectRunner",
            ]
            before = load()
            wall, cpu, rss, code, out = run_measured(cmd)
            if code != 0:
                print(out[-3000:])
                raise SystemExit(f"doctags preprocess failed ({code})")
            meta_path = os.path.join(args.workdir, f"run-{n}-{mode}", "data", "metadata.json")
            with open(meta_path) as f:
                meta = json.load(f)
            docs = meta["documents"]["total"]
            assert meta["all_records_accounted_for"] and docs == n, meta["documents"]
            written = sum(meta["examples_written"].values())
            rows.append(
                {
                    "documents": n,
                    "system": f"doctags ({mode}, {workers} worker{'s' * (workers > 1)})"
                    + "".join(f", {pair}" for pair in args.set),
                    "seconds": wall,
                    "cpu_seconds": cpu,
                    "docs_per_s": n / wall,
                    "peak_rss_mib": rss,
                    "load": f"{before} -> {load()}",
                    "written": written,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        if not args.skip_seeds:
            before = load()
            cmd = [sys.executable, os.path.abspath(__file__), "--seeds-baseline", pattern]
            wall, cpu, rss, code, out = run_measured(cmd)
            if code != 0:
                print(out[-3000:])
                raise SystemExit("seeds baseline failed")
            result = json.loads(out.strip().splitlines()[-1])
            rows.append(
                {
                    "documents": n,
                    "system": "seeds (regex + BeautifulSoup + Counter, 1 process)",
                    "seconds": wall,
                    "cpu_seconds": cpu,
                    "docs_per_s": result["documents"] / wall,
                    "peak_rss_mib": rss,
                    "load": f"{before} -> {load()}",
                    "written": 0,
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    print()
    print(
        "| documents | system | wall s | documents/s | vs seeds | CPU s | docs per CPU-s "
        "| peak RSS MiB | load avg before -> after |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        seeds = [
            r
            for r in rows
            if r["documents"] == row["documents"] and r["system"].startswith("seeds")
        ]
        ratio = f"{row['docs_per_s'] / seeds[0]['docs_per_s']:.1f}x" if seeds else "-"
        print(
            f"| {row['documents']:,} | {row['system']} | {row['seconds']:.1f} | "
            f"{row['docs_per_s']:,.0f} | {ratio} | {row['cpu_seconds']:.0f} | "
            f"{row['documents'] / row['cpu_seconds']:,.0f} | {row['peak_rss_mib']:,.0f} | "
            f"{row['load']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
