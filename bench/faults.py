"""Fault injection for doctags: bad data on the way in, kills, and serving; one line each.

    python bench/faults.py [--workdir DIR] [--scenarios NAME,...] [--skip-serve]
                           [--clients 4000] [--repo PATH]

Every data scenario builds its inputs under ``--workdir`` (real files: a
50 MB record, truncated and fake gzip, a Parquet file that is not one, a
process killed with SIGKILL), runs the real ``doctags`` command in a
subprocess and prints one line:

    NAME  in=records read  written=examples  dead=dead letters  rss=peak MiB  exit=status  PASS|FAIL

``rss`` is the peak resident memory of the command's process tree: the sum
of ``VmHWM`` (from /proc/PID/status, sampled every 50 ms) over the process
and its children (``ru_maxrss`` is inherited across exec and overstates).
The serving scenarios of `bench/faults_serve.py` (slow clients, a broken
newest version, a slow copy) run last, against a tiny export trained there.
Exit status 1 when any scenario failed.

The train/export scenarios of `bench/faults_train_export.py` (a publish
swap under readers, ``doctags export --overwrite`` and ``doctags train``
SIGKILLed while they save) run between the two, against their own tiny
model; their script owns what they check.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REUTERS = os.path.join(REPO, "data", "reuters21578", "reuters21578-modapte.jsonl.gz")


from faults_serve import Result  # noqa: E402  (one result line for every fault script)


# ------------------------------------------------------------------ running doctags
def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += _tree(int(child))
    except OSError:
        pass
    return out


def _hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Run:
    """A finished ``doctags`` command."""

    code: int
    output: str
    peak_mib: float
    seconds: float


def doctags(args: list[str], log_path: str, kill_when=None) -> Run:
    """Runs ``doctags ARGS``, sampling the tree's VmHWM; optionally SIGKILLs it.

    Args:
        args: The command's arguments.
        log_path: Where its stdout and stderr go.
        kill_when: A function polled every 5 ms; when it returns true the
            process is killed (SIGKILL), as a crash or a preempted VM would.
    """
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "doctags", *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peaks: dict[int, int] = {}
        last_sample = 0.0
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            if time.monotonic() - last_sample >= 0.05:
                for pid in _tree(proc.pid):
                    peaks[pid] = max(peaks.get(pid, 0), _hwm_bytes(pid))
                last_sample = time.monotonic()
            time.sleep(0.005 if kill_when is not None else 0.02)
    with open(log_path, errors="replace") as f:
        output = f.read()
    return Run(proc.returncode, output, sum(peaks.values()) / 2**20, time.monotonic() - started)


def write_config(directory: str, inputs, output_dir: str | None = None, **sections) -> str:
    """A small, fast config (tiny model) whose sections override the defaults."""
    import yaml

    os.makedirs(directory, exist_ok=True)
    raw = {
        "name": "faults",
        "output_dir": output_dir or os.path.join(directory, "run"),
        "data": {"input_pattern": inputs, "split_field": "split"},
        "preprocess": {"batch_size": 512, "vocab_size": 5000, "min_count": 1, "num_shards": 2},
        "model": {"family": "dnn", "sequence_length": 64, "embedding_dim": 16, "hidden_units": 16},
        "training": {"batch_size": 32, "epochs": 1, "early_stopping_patience": 1},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = os.path.join(directory, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def metadata(output_dir: str) -> dict:
    path = os.path.join(output_dir, "data", "metadata.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def snapshot(directory: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file: "untouched" means equal snapshots."""
    out = {}
    for path in glob.glob(os.path.join(directory, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def numbers(run: Run, output_dir: str | None = None, meta: dict | None = None) -> dict:
    """The columns every data scenario prints."""
    meta = meta if meta is not None else (metadata(output_dir) if output_dir else {})
    return {
        "in": meta.get("records_read", "-"),
        "written": sum(meta.get("examples_written", {}).values()) if meta else "-",
        "dead": meta.get("dead_letter", {}).get("total", "-"),
        "rss": f"{run.peak_mib:.0f}",
        "exit": run.code,
    }


def _last_line(run: Run) -> str:
    """The line that says what went wrong: the first error, else the last line."""
    lines = [line.strip() for line in run.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or " error: " in line]
    shown = errors[0] if errors else (lines[-1] if lines else "")
    return json.dumps(shown[:100])


# ------------------------------------------------------------------ corpora
def reuters_rows(train: int = 300, test: int = 100) -> list[dict]:
    seen = {"train": 0, "test": 0}
    rows = []
    with gzip.open(REUTERS, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if seen[row["split"]] < {"train": train, "test": test}[row["split"]]:
                seen[row["split"]] += 1
                rows.append(row)
    return rows


def write_jsonl(path: str, rows, raw_lines=()) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def huge_row(size: int, seed: int = 1) -> dict:
    """One valid record whose text is ``size`` characters of Reuters words."""
    words = " ".join(r["text"] for r in reuters_rows(200, 0)).split()
    rng = random.Random(seed)
    parts, n = [], 0
    while n < size:
        part = " ".join(rng.choice(words) for _ in range(2000))
        parts.append(part)
        n += len(part) + 1
    return {"id": "huge-1", "text": " ".join(parts)[:size], "labels": ["earn"], "split": "train"}


def synth_corpus(directory: str, labels: int, seed: int) -> str:
    from doctags_core import synth

    spec = synth.SynthSpec(documents=400, labels=labels, documents_per_shard=400, seed=seed)
    synth.write_corpus(spec, directory, "jsonl")
    return os.path.join(directory, "corpus-*.jsonl.gz")


# ------------------------------------------------------------------ issue 12: memory
def huge_record(workdir: str, baseline: Run) -> Result:
    """One 50 MB record among 400: truncated to max_chars, peak RSS within 1.5x baseline."""
    d = os.path.join(workdir, "huge")
    os.makedirs(d, exist_ok=True)
    rows = reuters_rows()
    rows.insert(150, huge_row(50_000_000))
    config = write_config(d, write_jsonl(os.path.join(d, "huge.jsonl.gz"), rows))
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    meta = metadata(os.path.join(d, "run"))
    ratio = run.peak_mib / baseline.peak_mib
    shown = numbers(run, meta=meta)
    shown.update(truncated=meta.get("truncated_documents"), vs_baseline=f"{ratio:.2f}x")
    passed = run.code == 0 and meta.get("truncated_documents") == 1 and ratio <= 1.5
    return Result("huge_record_50mb", shown, passed)


def huge_record_dead_letter(workdir: str, baseline: Run) -> Result:
    """The same with ``preprocess.oversize: dead_letter``: a ``too_long`` dead letter."""
    d = os.path.join(workdir, "huge-dead")
    config = write_config(
        d, os.path.join(workdir, "huge", "huge.jsonl.gz"), preprocess={"oversize": "dead_letter"}
    )
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    meta = metadata(os.path.join(d, "run"))
    ratio = run.peak_mib / baseline.peak_mib
    shown = numbers(run, meta=meta)
    shown["vs_baseline"] = f"{ratio:.2f}x"
    too_long = meta.get("dead_letter", {}).get("by_reason", {}).get("too_long")
    return Result(
        "huge_record_dead_letter", shown, run.code == 0 and too_long == 1 and ratio <= 1.5
    )


# ------------------------------------------------------------------ issue 12: atomic runs
def killed_rerun(workdir: str) -> Result:
    """A re-run (15 labels) killed once its shards are in place: the 20-label dataset stays.

    ``in``/``written`` are the dataset in place after the kill; ``train_after``
    is ``doctags train`` on it, ``next_run`` the re-run that cleans up.
    """
    d = os.path.join(workdir, "killed")
    shutil.rmtree(d, ignore_errors=True)
    output = os.path.join(d, "run")
    first = write_config(
        os.path.join(d, "a"),
        synth_corpus(os.path.join(d, "corpus20"), 20, 1),
        output,
        data={"text_fields": ["title", "text"], "split_field": None},
    )
    second = write_config(
        os.path.join(d, "b"),
        synth_corpus(os.path.join(d, "corpus15"), 15, 2),
        output,
        data={"text_fields": ["title", "text"], "split_field": None},
    )
    a = doctags(["preprocess", "--config", first], os.path.join(d, "a.log"))
    before = snapshot(os.path.join(output, "data"))

    def shards_in_place():
        return bool(glob.glob(os.path.join(output, ".data-staging-*", "train", "part-*")))

    def labels() -> int:
        return len(open(os.path.join(output, "data", "labels.txt")).read().split())

    labels_before = labels()
    killed = doctags(["preprocess", "--config", second], os.path.join(d, "b.log"), shards_in_place)
    after = snapshot(os.path.join(output, "data"))
    labels_after_kill = labels()
    train = doctags(["train", "--config", first], os.path.join(d, "train.log"))
    leftovers = len(glob.glob(os.path.join(output, ".data-staging-*")))
    again = doctags(["preprocess", "--config", second], os.path.join(d, "c.log"))
    cleaned = not glob.glob(os.path.join(output, ".data-*"))
    shown = numbers(killed, output)
    shown.update(
        exit=killed.code,
        untouched=after == before,
        labels=f"{labels_before}->{labels_after_kill}",
        train_after=train.code,
        leftovers=leftovers,
        next_run=again.code,
        cleaned=cleaned,
        labels_next=labels(),
    )
    passed = (
        a.code == 0
        and killed.code == -signal.SIGKILL
        and after == before
        and train.code == 0
        and leftovers == 1
        and again.code == 0
        and cleaned
    )
    return Result("killed_rerun", shown, passed)


def mixed_shards(workdir: str) -> Result:
    """A shard of another run copied into data/train: ``doctags train`` refuses (exit 2).

    What a killed run of the old, in-place layout left behind (new shards
    beside the old vocabularies); now only by hand, or a half-done swap on
    an object store.
    """
    output, _ = _published(workdir)
    other = os.path.join(workdir, "mixed")
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(output, os.path.join(other, "run"))
    train_dir = os.path.join(other, "run", "data", "train")
    stray = "part-20200101T000000Z-0badc0de-00000-of-00001.tfrecord.gz"
    shutil.copy(
        sorted(glob.glob(os.path.join(train_dir, "part-*")))[0], os.path.join(train_dir, stray)
    )
    config = write_config(other, os.path.join(workdir, "previous", "slice.jsonl.gz"))
    run = doctags(["train", "--config", config], os.path.join(other, "train.log"))
    shown = numbers(run, os.path.join(other, "run"))
    shown["message"] = _last_line(run)
    return Result("mixed_shards_refused", shown, run.code == 2 and "another run" in run.output)


# ------------------------------------------------------------------ issue 12: input faults
def _truncated_gzip(path: str, lines: list[bytes]) -> None:
    data = gzip.compress(b"".join(line + b"\n" for line in lines))
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def unreadable_files(workdir: str) -> Result:
    """Truncated/fake gzip JSONL and CSV, a broken Parquet and TFRecord among good files."""
    d = os.path.join(workdir, "unreadable")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_jsonl(os.path.join(d, "good.jsonl.gz"), reuters_rows())
    text = "grain exports rose sharply in the quarter " * 20
    _truncated_gzip(
        os.path.join(d, "truncated.jsonl.gz"),
        [
            json.dumps(
                {"id": f"t-{i}", "text": text, "labels": ["grain"], "split": "train"}
            ).encode()
            for i in range(3000)
        ],
    )
    with open(os.path.join(d, "fake.jsonl.gz"), "w") as f:
        f.write('{"id": "f-1", "text": "not gzip", "labels": ["a"], "split": "train"}\n')
    _truncated_gzip(
        os.path.join(d, "truncated.csv.gz"),
        [b"id,text,labels,split"]
        + [f"c-{i},Oil prices rose again,crude,train".encode() for i in range(20000)],
    )
    with open(os.path.join(d, "broken.parquet"), "wb") as f:
        f.write(b"PAR1 not a parquet file PAR1")
    with open(os.path.join(d, "broken.tfrecord"), "wb") as f:
        f.write(b"\x10" + b"\x00" * 11 + b"corrupt")
    patterns = [os.path.join(d, p) for p in ("*.jsonl*", "*.csv*", "*.parquet", "*.tfrecord")]
    config = write_config(d, patterns)
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    meta = metadata(os.path.join(d, "run"))
    unreadable = meta.get("dead_letter", {}).get("by_reason", {}).get("unreadable_file")
    shown = numbers(run, meta=meta)
    shown["unreadable_file"] = unreadable
    passed = run.code == 0 and unreadable == 5 and meta.get("all_records_accounted_for")
    return Result("unreadable_files", shown, passed)


def _published(workdir: str) -> tuple[str, dict]:
    """A published Reuters-slice dataset that a failing run must leave untouched."""
    d = os.path.join(workdir, "previous")
    output = os.path.join(d, "run")
    if not metadata(output):
        config = write_config(d, write_jsonl(os.path.join(d, "slice.jsonl.gz"), reuters_rows()))
        doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    return output, snapshot(os.path.join(output, "data"))


def fails_cleanly(workdir: str, name: str, inputs, expect: int, needle: str, **sections) -> Result:
    """A run that must fail with ``expect`` and ``needle`` and leave the previous dataset."""
    output, before = _published(workdir)
    d = os.path.join(workdir, name)
    config = write_config(d, inputs, output, **sections)
    earlier = set(glob.glob(os.path.join(output, ".data-staging-*", "metadata.json")))
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    untouched = snapshot(os.path.join(output, "data")) == before
    staged = glob.glob(os.path.join(output, ".data-staging-*", "metadata.json"))
    rejected = sorted(set(staged) - earlier)
    meta = {}
    if rejected:  # a run the data report rejected: its numbers are in its kept folder
        with open(rejected[-1]) as f:
            meta = json.load(f)
    shown = numbers(run, meta=meta)
    shown.update(untouched=untouched, message=_last_line(run))
    return Result(name, shown, run.code == expect and needle in run.output and untouched)


def unknown_extension(workdir: str) -> Result:
    d = os.path.join(workdir, "unknown_extension")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "corpus.xml"), "w") as f:
        f.write("<doc/>")
    good = write_jsonl(os.path.join(d, "good.jsonl"), reuters_rows(20, 5))
    return fails_cleanly(
        workdir,
        "unknown_extension",
        [good, os.path.join(d, "corpus.*")],
        2,
        "data.format: cannot tell the format",
    )


def csv_bom(workdir: str) -> Result:
    """An Excel CSV (UTF-8 BOM): every row parses (was: every row missing_id)."""
    d = os.path.join(workdir, "csv_bom")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "excel.csv")
    import csv

    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "labels", "split"])
        for row in reuters_rows(200, 50):
            writer.writerow([row["id"], row["text"], ", ".join(row["labels"]), row["split"]])
    config = write_config(d, path)
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    meta = metadata(os.path.join(d, "run"))
    passed = run.code == 0 and meta.get("dead_letter", {}).get("total") == 0
    return Result("csv_bom", numbers(run, meta=meta), passed and meta["records_read"] == 250)


def csv_missing_column(workdir: str) -> Result:
    d = os.path.join(workdir, "csv_missing_column")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "no-labels.csv")
    with open(path, "w") as f:
        f.write("id,text,split\n1,Oil prices rose,train\n")
    return fails_cleanly(
        workdir, "csv_missing_column", path, 2, "data.label_field: 'labels' is not a column"
    )


def jsonl_without_id(workdir: str) -> Result:
    d = os.path.join(workdir, "jsonl_without_id")
    os.makedirs(d, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k != "id"} for r in reuters_rows(50, 10)]
    path = write_jsonl(os.path.join(d, "no-id.jsonl"), rows)
    return fails_cleanly(workdir, "jsonl_without_id", path, 2, "data.id_field: 'id'")


def too_many_dead_letters(workdir: str) -> Result:
    d = os.path.join(workdir, "too_many_dead_letters")
    os.makedirs(d, exist_ok=True)
    rows = reuters_rows(100, 20)
    broken = [json.dumps(r)[:-1] for r in reuters_rows(60, 0)]
    path = write_jsonl(os.path.join(d, "half.jsonl"), rows, broken)
    return fails_cleanly(
        workdir, "too_many_dead_letters", path, 3, "records are dead letters, over"
    )


def silent_acceptances(workdir: str) -> Result:
    """Numeric labels, a stray quote, a repeated id, an empty document: each a dead letter."""
    d = os.path.join(workdir, "silent")
    os.makedirs(d, exist_ok=True)
    extra = [
        {"id": "num", "text": "Wheat exports rose", "labels": [1, 2], "split": "train"},
        {"id": "quote", "text": "Grain prices", "labels": 'grain, topic-09"', "split": "train"},
        {"id": "dup", "text": "Zinc output fell", "labels": ["zinc"], "split": "train"},
        {"id": "dup", "text": "Copper rose", "labels": ["copper"], "split": "train"},
        {"id": "digits", "text": "1987 12 34", "labels": ["earn"], "split": "train"},
    ]
    path = write_jsonl(os.path.join(d, "mixed.jsonl"), reuters_rows(200, 50) + extra)
    config = write_config(d, path)
    run = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
    meta = metadata(os.path.join(d, "run"))
    reasons = meta.get("dead_letter", {}).get("by_reason", {})
    shown = numbers(run, meta=meta)
    shown["reasons"] = ",".join(f"{k}:{v}" for k, v in sorted(reasons.items()))
    want = {"duplicate_id": 1, "empty_after_cleaning": 1, "invalid_labels": 2}
    return Result("silent_acceptances", shown, run.code == 0 and reasons == want)


# ------------------------------------------------------------------ issue 13: wrong settings
def _movies_csv(path: str, delimiter: str) -> str:
    import csv

    rng = random.Random(3)
    tags = ["murder", "violence", "flashback", "romance", "comedy", "drama", "revenge"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "plot_synopsis", "tags", "split"])
        for i, row in enumerate(reuters_rows(300, 0)):
            chosen = delimiter.join(rng.sample(tags, 3))
            split = ["train", "train", "train", "test", "val"][i % 5]
            writer.writerow([f"Movie {i}", row["text"], chosen, split])
    return path


def misspelled_text_field(workdir: str) -> Result:
    d = os.path.join(workdir, "misspelled_text_field")
    os.makedirs(d, exist_ok=True)
    path = _movies_csv(os.path.join(d, "mpst.csv"), ", ")
    return fails_cleanly(
        workdir,
        "misspelled_text_field",
        path,
        2,
        "data.text_fields: 'plot' is not a column",
        data={"id_field": None, "text_fields": ["title", "plot"], "label_field": "tags"},
    )


def delimited_labels(workdir: str) -> Result:
    d = os.path.join(workdir, "delimited_labels")
    os.makedirs(d, exist_ok=True)
    path = _movies_csv(os.path.join(d, "mpst.csv"), "|")
    return fails_cleanly(
        workdir,
        "delimited_labels",
        path,
        3,
        "set data.label_delimiter: '|'",
        data={"id_field": None, "text_fields": ["title", "plot_synopsis"], "label_field": "tags"},
    )


# ------------------------------------------------------------------ serving
def serving(workdir: str, repo: str, clients: int, names: list[str]) -> list[Result]:
    """The scenarios of bench/faults_serve.py, against a tiny export built there."""
    import faults_serve

    export = faults_serve.ensure_export(os.path.join(workdir, "serve"))
    out = []
    for name in names:
        if name == "slow_clients":
            base = os.path.dirname(export)
            log = os.path.join(workdir, "serve", "slow.log")
            server = faults_serve.Server(repo, base, log, [])
            try:
                result = faults_serve.slow_clients(server, clients)
            finally:
                server.stop()
        elif name == "broken_newest":
            result = faults_serve.broken_newest(repo, export, os.path.join(workdir, "serve"))
        else:
            result = faults_serve.slow_copy(repo, export, os.path.join(workdir, "serve"))
        out.append(result)
    return out


DATA_SCENARIOS = (
    "huge_record_50mb",
    "huge_record_dead_letter",
    "killed_rerun",
    "mixed_shards_refused",
    "unreadable_files",
    "unknown_extension",
    "csv_bom",
    "csv_missing_column",
    "jsonl_without_id",
    "too_many_dead_letters",
    "silent_acceptances",
    "misspelled_text_field",
    "delimited_labels",
)
TRAIN_EXPORT_SCENARIOS = ("publish_swap", "export_sigkill", "train_sigkill")
SERVE_SCENARIOS = ("slow_clients", "broken_newest", "slow_copy")


def train_export(workdir: str, names: list[str]) -> list[Result]:
    """The scenarios of bench/faults_train_export.py (train and export killed while saving)."""
    import faults_train_export

    config = faults_train_export.ensure_trained(os.path.join(workdir, "train_export"))
    out = []
    for name in names:
        result = faults_train_export.SCENARIOS[name](config)
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs the scenarios and prints one line each; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "doctags-faults"))
    parser.add_argument(
        "--scenarios",
        default=",".join(DATA_SCENARIOS + TRAIN_EXPORT_SCENARIOS + SERVE_SCENARIOS),
    )
    parser.add_argument("--skip-serve", action="store_true", help="data scenarios only")
    parser.add_argument("--clients", type=int, default=4000, help="slow_clients connections")
    parser.add_argument("--repo", default=REPO, help="checkout whose `doctags serve` runs")
    args = parser.parse_args(argv)
    names = args.scenarios.split(",")
    unknown = set(names) - set(DATA_SCENARIOS + TRAIN_EXPORT_SCENARIOS + SERVE_SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    os.makedirs(args.workdir, exist_ok=True)
    from doctags.console import NativeLogFilter

    native = NativeLogFilter()  # TensorFlow's start-up lines (serving's client) stay out
    try:
        return _run(args, names)
    finally:
        native.close()


def _run(args, names: list[str]) -> int:
    results = []
    baseline = None
    if {"huge_record_50mb", "huge_record_dead_letter"} & set(names):
        d = os.path.join(args.workdir, "baseline")
        config = write_config(d, write_jsonl(os.path.join(d, "base.jsonl.gz"), reuters_rows()))
        baseline = doctags(["preprocess", "--config", config], os.path.join(d, "log.txt"))
        result = Result("baseline_400_records", numbers(baseline, os.path.join(d, "run")))
        result.passed = baseline.code == 0
        print(result.line(24), flush=True)
        results.append(result)
    scenarios = {
        "huge_record_50mb": lambda: huge_record(args.workdir, baseline),
        "huge_record_dead_letter": lambda: huge_record_dead_letter(args.workdir, baseline),
        "killed_rerun": lambda: killed_rerun(args.workdir),
        "mixed_shards_refused": lambda: mixed_shards(args.workdir),
        "unreadable_files": lambda: unreadable_files(args.workdir),
        "unknown_extension": lambda: unknown_extension(args.workdir),
        "csv_bom": lambda: csv_bom(args.workdir),
        "csv_missing_column": lambda: csv_missing_column(args.workdir),
        "jsonl_without_id": lambda: jsonl_without_id(args.workdir),
        "too_many_dead_letters": lambda: too_many_dead_letters(args.workdir),
        "silent_acceptances": lambda: silent_acceptances(args.workdir),
        "misspelled_text_field": lambda: misspelled_text_field(args.workdir),
        "delimited_labels": lambda: delimited_labels(args.workdir),
    }
    for name in names:
        if name in scenarios:
            result = scenarios[name]()
            print(result.line(24), flush=True)
            results.append(result)
    trained = [n for n in names if n in TRAIN_EXPORT_SCENARIOS]
    if trained:
        for result in train_export(args.workdir, trained):
            print(result.line(24), flush=True)
            results.append(result)
    serve = [n for n in names if n in SERVE_SCENARIOS]
    if serve and not args.skip_serve:
        for result in serving(args.workdir, os.path.abspath(args.repo), args.clients, serve):
            print(result.line(24), flush=True)
            results.append(result)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
