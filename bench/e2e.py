"""The whole path at scale: synth -> preprocess -> train -> export -> batch tagging -> evaluate.

    python bench/e2e.py [--documents 100000 1000000] [--family dnn] [--epochs 1]
        [--batch-size 256] [--work /tmp/doctags-e2e]

For each corpus size it generates a synthetic corpus (`doctags synth`, 500
labels, fixed seed; reused when its manifest matches) and runs every stage
of the path on it, each in its own child process:

- ``preprocess``: ``doctags preprocess`` (Beam DirectRunner, in memory);
- ``train``: ``doctags train`` (the custom loop; ``--family``, ``--epochs``);
- ``export``: ``doctags export`` (the SavedModel TF Serving loads);
- ``tag``: batch tagging of the WHOLE corpus (every document, raw JSONL in,
  tags out as gzip JSONL): ``doctags predict --input --output`` (the Beam
  RunInference job), or ``--tagging in_process`` (`Tagger` batches);
- ``evaluate``: ``doctags evaluate`` on the test split (metrics JSON + HTML).

A stage's child runs the CLI in process and reports its own peak RSS
(``VmHWM`` of /proc/self/status, read as it ends: ``ru_maxrss`` would carry
the parent's peak over exec). Documents/s counts the documents the stage
handles: the corpus (synth, preprocess, tag), the training documents times
the epochs (train), the test split (evaluate); export has none. Prints one
table for all sizes, with each stage's peak RSS relative to its peak at the
smallest size (the target: at most 2x at 1M vs 100k). The machine is
shared: wall times move with other load (the load average is printed).
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PEAK_LINE = "E2E_PEAK_KB "
TAG_BATCH = 1024
TEXT_FIELDS = ["title", "text"]


def peak_kb() -> int:
    """This process's peak RSS (VmHWM), in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


# ------------------------------------------------------------ batch tagging
def tag_corpus(model: str, input_glob: str, output_dir: str) -> int:
    """Tags every document of the corpus in batches; writes one gzip JSONL per input file.

    In-process stand-in for the Beam ``doctags predict --input --output``
    job: streams each file, so memory does not grow with the corpus.
    Returns the number of documents tagged.
    """
    from doctags_core import export_contract as contract
    from doctags_core.tagger import Tagger

    tagger = Tagger(model)
    os.makedirs(output_dir, exist_ok=True)
    done = 0

    def flush(out, ids, texts):
        result = tagger.raw(texts)
        tags = contract.decode_tags(result["tags"], result["tag_scores"])
        for doc_id, doc_tags in zip(ids, tags):
            out.write(json.dumps({"id": doc_id, "tags": doc_tags}) + "\n")

    for path in sorted(glob.glob(input_glob)):
        name = os.path.basename(path).split(".")[0] + ".tags.jsonl.gz"
        with (
            gzip.open(path, "rt", encoding="utf-8") as src,
            gzip.open(
                os.path.join(output_dir, name), "wt", encoding="utf-8", compresslevel=1
            ) as out,
        ):
            ids, texts = [], []
            for line in src:
                doc = json.loads(line)
                ids.append(doc["id"])
                texts.append("\n".join(doc[k] for k in TEXT_FIELDS if doc.get(k)))
                if len(texts) == TAG_BATCH:
                    flush(out, ids, texts)
                    done += len(texts)
                    ids, texts = [], []
            if texts:
                flush(out, ids, texts)
                done += len(texts)
    tagger.close()
    return done


def in_process_tag_command(model: str, input_glob: str, output_dir: str) -> list[str]:
    return ["--tag", model, input_glob, output_dir]


def beam_predict_command(model: str, input_glob: str, output_dir: str) -> list[str]:
    """The Beam batch job users run: ``doctags predict --input GLOB --output DIR``."""
    return [
        "predict",
        "--model",
        model,
        "--input",
        input_glob,
        "--output",
        output_dir,
        "--overwrite",
    ]


TAG_COMMANDS = {"beam": beam_predict_command, "in_process": in_process_tag_command}


# ------------------------------------------------------------ stage children
def child(argv: list[str]) -> None:
    """Runs one stage in this process, then prints its peak RSS."""
    if argv[0] == "--tag":
        tag_corpus(*argv[1:])
        code = 0
    else:
        from doctags.cli import main as doctags_main
        from doctags_core.tf_runtime import dedicate_process_to_preprocessing

        if argv[0] == "preprocess":  # this child runs nothing else, as `doctags preprocess`
            dedicate_process_to_preprocessing()
        code = doctags_main(argv)
    print(f"{PEAK_LINE}{peak_kb()}", flush=True)
    sys.exit(code or 0)


def run_stage(argv: list[str], log_path: str) -> tuple[float, float]:
    """Runs a stage's child; ``(wall seconds, peak RSS MiB)``.

    Raises:
        SystemExit: when the stage fails (its log's tail is printed).
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *argv]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    with open(log_path) as f:
        text = f.read()
    peaks = [line for line in text.splitlines() if line.startswith(PEAK_LINE)]
    if code != 0 or not peaks:
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"stage {' '.join(argv[:2])} failed ({code}); log: {log_path}")
    return wall, int(peaks[-1][len(PEAK_LINE) :]) / 1024


# ------------------------------------------------------------ one corpus size
def ensure_corpus(work: str, n: int, labels: int, seed: int) -> tuple[str, float | None]:
    """The corpus glob, and the seconds spent generating it (None: reused)."""
    out = os.path.join(work, f"corpus-{n}")
    manifest = os.path.join(out, "corpus.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            spec = json.load(f)["spec"]
        if (spec["documents"], spec["labels"], spec["seed"]) == (n, labels, seed):
            return os.path.join(out, "corpus-*.jsonl.gz"), None
    argv = ["synth", "--out", out, "--documents", str(n), "--labels", str(labels)]
    argv += ["--seed", str(seed), "--workers", "2"]
    wall, _ = run_stage(argv, os.path.join(work, f"synth-{n}.log"))
    return os.path.join(out, "corpus-*.jsonl.gz"), wall


def write_config(work: str, n: int, pattern: str, args) -> str:
    import yaml

    path = os.path.join(work, f"e2e-{n}.yaml")
    cfg = {
        "name": f"e2e-{n}",
        "output_dir": os.path.join(work, f"run-{n}"),
        "data": {"input_pattern": pattern, "text_fields": TEXT_FIELDS},
        "preprocess": {"runner": "DirectRunner", "direct_running_mode": "in_memory"},
        "model": {"family": args.family},
        "training": {
            "epochs": args.epochs,
            "early_stopping_patience": args.epochs,
            "batch_size": args.batch_size,
        },
        "export": {"model_name": "e2e", "version": 1},
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def run_size(n: int, args) -> list[dict]:
    """Every stage on a corpus of ``n`` documents; one row per stage."""
    pattern, synth_seconds = ensure_corpus(args.work, n, args.labels, args.seed)
    config = write_config(args.work, n, pattern, args)
    run_dir = os.path.join(args.work, f"run-{n}")
    rows = []
    if synth_seconds is not None:
        rows.append({"stage": "synth", "seconds": synth_seconds, "docs": n, "peak": None})

    def stage(name: str, argv: list[str], docs=None) -> None:
        started_load = os.getloadavg()[0]
        wall, peak = run_stage(argv, os.path.join(args.work, f"{name}-{n}.log"))
        rows.append({"stage": name, "seconds": wall, "docs": docs, "peak": peak})
        print(
            f"[{n:,}] {name}: {wall:.1f}s, peak {peak:,.0f} MiB "
            f"(load {started_load:.1f} -> {os.getloadavg()[0]:.1f})",
            flush=True,
        )

    stage("preprocess", ["preprocess", "--config", config, "--", "--runner=DirectRunner"], n)
    with open(os.path.join(run_dir, "data", "metadata.json")) as f:
        documents = json.load(f)["documents"]
    stage("train", ["train", "--config", config], documents["train"] * args.epochs)
    stage("export", ["export", "--config", config, "--overwrite"])
    model = os.path.join(run_dir, "export", "e2e")
    tagged = os.path.join(run_dir, "tagged")
    stage("tag", TAG_COMMANDS[args.tagging](model, pattern, tagged), n)
    stage("evaluate", ["evaluate", "--config", config], documents["test"])
    with open(os.path.join(run_dir, "eval", "metrics_test.json")) as f:
        metrics = json.load(f)["metrics"]
    print(
        f"[{n:,}] test micro-F1 {metrics['micro_f1']:.4f} macro-F1 {metrics['macro_f1']:.4f}",
        flush=True,
    )
    for row in rows:
        row["documents"] = n
    return rows


def print_table(rows: list[dict]) -> None:
    smallest = min(r["documents"] for r in rows)
    base = {r["stage"]: r["peak"] for r in rows if r["documents"] == smallest}
    print("| documents | stage | wall s | documents/s | peak RSS MiB | peak vs smallest |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        rate = f"{r['docs'] / r['seconds']:,.0f}" if r["docs"] else "-"
        peak = f"{r['peak']:,.0f}" if r["peak"] is not None else "-"
        ratio = "-"
        if r["peak"] is not None and base.get(r["stage"]):
            ratio = f"{r['peak'] / base[r['stage']]:.2f}x"
        print(
            f"| {r['documents']:,} | {r['stage']} | {r['seconds']:.1f} | {rate} | {peak} | "
            f"{ratio} |"
        )
    for n in sorted({r["documents"] for r in rows}):
        total = sum(r["seconds"] for r in rows if r["documents"] == n and r["stage"] != "synth")
        print(f"{n:,} documents: whole path (preprocess to evaluate) {total:.0f}s")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--family", default="dnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tagging",
        choices=sorted(TAG_COMMANDS),
        default="beam",
        help="the tag stage: the Beam `doctags predict` job, or in-process Tagger batches",
    )
    parser.add_argument("--work", default="/tmp/doctags-e2e")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()} (shared)")
    rows = []
    for n in args.documents:
        rows += run_size(n, args)
    print()
    print_table(rows)
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
