"""Preprocessing throughput and memory: the doctags Beam job vs the seeds' approach.

    python bench/preprocess.py --documents 100000 1000000 --workdir /tmp/doctags-scale

For each corpus size it generates (or reuses) a synthetic corpus
(`doctags_core.synth`, sharded JSONL.gz, fixed seed) and runs, one after the
other on the same files and the same cores:

* ``doctags``: the real ``doctags preprocess`` (DirectRunner, the given
  ``direct_running_mode``s), TFRecords, vocabularies and metadata written;
* ``seeds``: the seeds' approach: per document, Python ``re`` + BeautifulSoup
  cleaning, an in-memory ``Counter`` word count, cleaned texts kept in a
  list (what the seeds fed their vectorizer); nothing written;
* ``tf.Transform``: the job a user would write with TensorFlow Transform
  instead (``bench/tft_peer.py``: the same cleaning function, a
  ``compute_and_apply_vocabulary`` with the same size and threshold,
  ``AnalyzeAndTransformDataset``, transformed TFRecords written), run by the
  Python of its own virtualenv, which the bench builds on first use
  (``--tft-venv``, default ``~/.cache/doctags-bench/tft-venv``;
  ``TFT_REQUIREMENTS``, ~2.9 GB, a few minutes): tf.Transform is never a
  doctags dependency. ``--no-tft`` skips it. Its output is read back
  afterwards (records per split, vocabulary, overlap with doctags'
  ``vocab.txt``), outside the measurement.

Each runs in its own process; peak RSS is the sum over its process tree
(workers included), sampled every 0.25 s. Wall time includes start-up
(imports, pipeline construction), so documents/s is end to end. Prints one
table with throughput ratios against the seeds (documents/s) and against
tf.Transform (documents per CPU-second). The machine load average is
printed too: on a shared machine, compare rows of the same run only.
``--repeats N`` runs each doctags row N times, alternating between the
rows, and shows the run of median CPU seconds beside every run's: the
same 1M job has taken anywhere from 96 to 156 CPU-s on the 2-core
development machine.

Runners: ``doctags preprocess`` is run as shipped, ``--runner=DirectRunner``
(in Beam 2.77 the SwitchingDirectRunner: it tries the Prism runner, which
needs to download a binary, and without network falls back to the
in-process FnApiRunner); the tf.Transform peer names ``FnApiRunner``
directly. Both end up on the FnApiRunner, ``in_memory``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
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


# ---------------------------------------------------------------- tf.Transform peer
# Its own environment, never a doctags dependency. tensorflow-transform 1.21.0
# resolves to these TensorFlow and Beam releases, the ones doctags pins; naming
# them keeps a later resolver from moving the peer to other versions.
TFT_REQUIREMENTS = ("tensorflow-transform==1.21.0", "tensorflow==2.21.0", "apache-beam==2.77.0")
TFT_PEER = os.path.join(REPO, "bench", "tft_peer.py")


def default_tft_venv() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "doctags-bench", "tft-venv")


def ensure_tft_venv(path: str) -> str:
    """The Python of a virtualenv holding `TFT_REQUIREMENTS`, built if missing.

    A marker file records what was installed; a venv built for other
    requirements (or left half-built) is rebuilt from scratch.
    """
    python = os.path.join(path, "bin", "python")
    marker = os.path.join(path, "doctags-bench-requirements.txt")
    wanted = "\n".join(TFT_REQUIREMENTS) + "\n"
    if os.path.exists(marker) and os.path.exists(python):
        with open(marker) as f:
            if f.read() == wanted:
                return python
    print(f"building the tf.Transform venv at {path}: {' '.join(TFT_REQUIREMENTS)}", flush=True)
    started = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)  # not this venv's interpreter
    subprocess.run([base, "-m", "venv", path], check=True)
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *TFT_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        print(install.stdout[-3000:], install.stderr[-3000:])
        raise SystemExit(f"pip install into {path} failed ({install.returncode})")
    with open(marker, "w") as f:
        f.write(wanted)
    print(f"built the tf.Transform venv in {time.perf_counter() - started:.0f}s", flush=True)
    return python


def tft_versions(python: str) -> dict:
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('tensorflow-transform', 'tensorflow', 'apache-beam', 'tfx-bsl', 'pyarrow')}))"
    )
    return json.loads(
        subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def vocab_overlap(doctags_counts: str, tft_vocab: str) -> dict:
    """How far the two vocabularies agree (a check that the jobs are comparable).

    Both keep the ``vocab_size`` most frequent train tokens but break ties in
    count differently (doctags: token ascending, tf.Transform: descending), so
    they may differ only among the tokens with the smallest kept count: every
    token counted more often must be in both.
    """
    with open(doctags_counts, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f.readlines()[1:]]
    ours = [token for token, _, _ in rows]
    with open(tft_vocab, encoding="utf-8") as f:
        theirs = f.read().splitlines()
    tie_count = min(int(n) for _, n, _ in rows)
    above = [token for token, n, _ in rows if int(n) > tie_count]
    return {
        "doctags": len(ours),
        "tft": len(theirs),
        "common": len(set(ours) & set(theirs)),
        "smallest_count": tie_count,
        "above_smallest": len(above),
        "above_smallest_same_set": set(above) == set(theirs[: len(above)]),
    }


def run_tft_peer(python: str, args, n: int, pattern: str, checks: list) -> dict:
    """Runs the tf.Transform peer on the corpus, measured; then reads its output back."""
    from doctags_core.config import load_config

    mode = args.modes.split(",")[0]
    cfg = load_config(os.path.join(args.workdir, f"bench-{n}-{mode}.yaml"), check_inputs=False)
    out_dir = os.path.join(args.workdir, f"tft-{n}")
    cmd = [
        python,
        TFT_PEER,
        "--input",
        pattern,
        "--output-dir",
        out_dir,
        "--text-fields",
        ",".join(cfg.data.text_fields),
        "--steps",
        ",".join(cfg.cleaning.steps),
        "--vocab-size",
        str(cfg.preprocess.vocab_size),
        "--min-count",
        str(cfg.preprocess.min_count),
        "--validation-fraction",
        str(cfg.data.validation_fraction),
        "--test-fraction",
        str(cfg.data.test_fraction),
        f"--runner={args.tft_runner}",
    ]
    before = load()
    wall, cpu, rss, code, out = run_measured(cmd)
    with open(os.path.join(args.workdir, f"tft-{n}.log"), "w") as f:
        f.write(out)
    if code != 0:
        print(out[-3000:])
        raise SystemExit(f"tf.Transform peer failed ({code})")
    summary = json.loads(out.strip().splitlines()[-1])
    prism = [line for line in out.splitlines() if "Prism" in line]
    assert summary["documents"] == n, summary
    check = subprocess.run(
        [python, TFT_PEER, "--check", "--output-dir", out_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    readback = json.loads(check.stdout.strip().splitlines()[-1])
    assert readback["records"] == summary["written"], (readback["records"], summary["written"])
    entry = {"documents": n, "tft_run": summary, "tft_readback": readback, "prism_lines": prism}
    doctags_meta = os.path.join(args.workdir, f"run-{n}-{mode}", "data", "metadata.json")
    if os.path.exists(doctags_meta):
        with open(doctags_meta) as f:
            meta = json.load(f)
        entry["doctags_documents"] = {s: meta["documents"][s] for s in summary["written"]}
        entry["vocab_overlap"] = vocab_overlap(
            os.path.join(os.path.dirname(doctags_meta), "vocab_counts.tsv"),
            readback["token_vocabulary_file"],
        )
    checks.append(entry)
    print(json.dumps(entry), flush=True)
    return {
        "documents": n,
        "system": f"tf.Transform {summary['versions']['tensorflow-transform']} "
        f"({summary['runner']}, in_memory)",
        "seconds": wall,
        "cpu_seconds": cpu,
        "docs_per_s": summary["documents"] / wall,
        "peak_rss_mib": rss,
        "load": f"{before} -> {load()}",
        "written": summary["documents"],
    }


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
            **({"batch_size": batch} if batch else {}),
        },
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def doctags_row(args, n: int, pattern: str, mode: str, sets: list[str]) -> dict:
    """One measured `doctags preprocess` run in ``mode`` with the ``--set`` overrides ``sets``."""
    workers = 1 if mode == "in_memory" else args.workers
    config = write_config(args.workdir, n, pattern, mode, workers, args.batch_size)
    cmd = [
        os.path.join(REPO, ".venv", "bin", "doctags"),
        "preprocess",
        "--config",
        config,
        *[arg for pair in sets for arg in ("--set", pair)],
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
    return {
        "documents": n,
        "system": f"doctags ({mode}, {workers} worker{'s' * (workers > 1)})"
        + "".join(f", {pair}" for pair in sets),
        "seconds": wall,
        "cpu_seconds": cpu,
        "docs_per_s": n / wall,
        "peak_rss_mib": rss,
        "load": f"{before} -> {load()}",
        "written": written,
        # Which runner ran: DirectRunner tries Prism first (see module doc).
        "runner_log": [
            line.split(": ", 1)[-1][:160]
            for line in out.splitlines()
            if "PrismRunner" in line or "Falling back" in line
        ],
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median CPU seconds (the lower one of an even count), with every run's CPU.

    A real run, not an average of runs, so that its wall time, CPU and
    peak RSS belong together; ``cpu_runs`` keeps the spread visible.
    """
    ordered = sorted(runs, key=lambda r: r["cpu_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "cpu_runs": [r["cpu_seconds"] for r in runs]}


def seeds_row(n: int, pattern: str) -> dict:
    """The seeds' per-document cleaning on the same corpus, measured."""
    before = load()
    cmd = [sys.executable, os.path.abspath(__file__), "--seeds-baseline", pattern]
    wall, cpu, rss, code, out = run_measured(cmd)
    if code != 0:
        print(out[-3000:])
        raise SystemExit("seeds baseline failed")
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "documents": n,
        "system": "seeds (regex + BeautifulSoup + Counter, 1 process)",
        "seconds": wall,
        "cpu_seconds": cpu,
        "docs_per_s": result["documents"] / wall,
        "peak_rss_mib": rss,
        "load": f"{before} -> {load()}",
        "written": 0,
    }


def each_run(row: dict) -> str:
    """``110/96/142``: the CPU seconds of each run behind a repeated row, else ``-``."""
    cpu = row.get("cpu_runs", [])
    return "/".join(f"{c:.0f}" for c in cpu) if len(cpu) > 1 else "-"


def print_report(rows: list[dict], checks: list[dict]) -> None:
    """The table, the runner logs and the tf.Transform checks."""
    print()
    print(
        "| documents | system | wall s | documents/s | vs seeds | CPU s | docs per CPU-s "
        "| vs tf.Transform (per CPU-s) | peak RSS MiB | load avg before -> after "
        "| CPU s of each run |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")

    def peer(row, prefix):
        same = [r for r in rows if r["documents"] == row["documents"]]
        return next((r for r in same if r["system"].startswith(prefix)), None)

    for row in rows:
        seeds, tft = peer(row, "seeds"), peer(row, "tf.Transform")
        per_cpu = row["documents"] / row["cpu_seconds"]
        vs_seeds = f"{row['docs_per_s'] / seeds['docs_per_s']:.1f}x" if seeds else "-"
        vs_tft = f"{per_cpu / (tft['documents'] / tft['cpu_seconds']):.1f}x" if tft else "-"
        print(
            f"| {row['documents']:,} | {row['system']} | {row['seconds']:.1f} | "
            f"{row['docs_per_s']:,.0f} | {vs_seeds} | {row['cpu_seconds']:.0f} | "
            f"{per_cpu:,.0f} | {vs_tft} | {row['peak_rss_mib']:,.0f} | {row['load']} | "
            f"{each_run(row)} |"
        )
    for row in rows:
        if row.get("runner_log"):
            print(f"\n{row['system']} at {row['documents']:,}, runner log:")
            for line in row["runner_log"]:
                print(f"  {line}")
    for entry in checks:
        back, run = entry["tft_readback"], entry["tft_run"]
        print(
            f"\ntf.Transform at {entry['documents']:,}: records written {back['records']} "
            f"(doctags: {entry.get('doctags_documents', '-')}), token vocabulary "
            f"{back['token_vocabulary_size']:,} (+1 OOV bucket), labels "
            f"{back['label_vocabulary_size']}, runner {run['runner']}, "
            f"Prism log lines: {len(entry['prism_lines'])}"
        )
        print(
            f"  time: {run['construction_seconds']:.1f}s imports + pipeline construction, "
            f"{run['run_seconds']:.1f}s running; step time (runner's state sampler, wall): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in run["step_seconds"].items())
        )
        if "vocab_overlap" in entry:
            v = entry["vocab_overlap"]
            print(
                f"  vocabulary vs doctags': doctags {v['doctags']:,}, tf.Transform {v['tft']:,}, "
                f"in both {v['common']:,}; the {v['above_smallest']:,} tokens counted more than "
                f"{v['smallest_count']} times are the same set: {v['above_smallest_same_set']} "
                "(ties at the smallest count are broken differently)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/doctags-scale")
    parser.add_argument("--modes", default="in_memory", help="comma-separated DirectRunner modes")
    parser.add_argument("--workers", type=int, default=2, help="workers for multi_* modes")
    parser.add_argument(
        "--batch-size", type=int, help="preprocess.batch_size (default: the config default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-seeds", action="store_true")
    parser.add_argument("--no-tft", action="store_true", help="skip the tf.Transform peer")
    parser.add_argument(
        "--tft-venv",
        default=os.environ.get("DOCTAGS_TFT_VENV") or default_tft_venv(),
        help="virtualenv of the tf.Transform peer (built if missing; env DOCTAGS_TFT_VENV)",
    )
    parser.add_argument(
        "--tft-runner",
        default="FnApiRunner",
        help="Beam runner of the tf.Transform peer (DirectRunner would try Prism first)",
    )
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the doctags runs (doctags preprocess --set)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help="also measure doctags with these overrides (on top of --set), in the same run, "
        "before the default row; for example preprocess.duplicate_ids=keep, the pass "
        "tf.Transform's job does not do",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each doctags row, alternating between the rows; the row shows the run "
        "of median CPU seconds and lists every run's (this machine drifts by ~20%% from run "
        "to run)",
    )
    parser.add_argument("--seeds-baseline", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()

    if args.seeds_baseline:
        print(json.dumps(seeds_baseline(args.seeds_baseline, ["title", "text"])))
        return 0

    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    checks = []
    tft_python = None
    if not args.no_tft:
        tft_python = ensure_tft_venv(args.tft_venv)
        print(f"tf.Transform peer: {tft_python} {json.dumps(tft_versions(tft_python))}")
    print(f"machine: {os.cpu_count()} cores, load average {load()} (shared with other jobs)")
    for n in args.documents:
        pattern = ensure_corpus(args.workdir, n, args.seed)
        for mode in args.modes.split(","):
            # The default row last: tf.Transform's vocabulary check reads its output.
            configs = [[*args.set, *v.split(";")] for v in args.variant] + [args.set]
            runs: list[list[dict]] = [[] for _ in configs]
            for _ in range(max(1, args.repeats)):
                for runs_of_config, sets in zip(runs, configs):
                    runs_of_config.append(doctags_row(args, n, pattern, mode, sets))
                    print(json.dumps(runs_of_config[-1]), flush=True)
            rows += [median_run(runs_of_config) for runs_of_config in runs]
        if not args.skip_seeds:
            rows.append(seeds_row(n, pattern))
            print(json.dumps(rows[-1]), flush=True)
        if tft_python:
            rows.append(run_tft_peer(tft_python, args, n, pattern, checks))
            print(json.dumps(rows[-1]), flush=True)

    print_report(rows, checks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "tft_checks": checks}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
