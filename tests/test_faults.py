"""Issue 12: preprocessing is bounded, crash-safe and loud about bad input.

Real Beam, real TensorFlow, small slices of the bundled Reuters corpus; the
faults are real files (truncated gzip, a Parquet file that is not one, a
killed process), never mocks.
"""

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib

import pytest
import tensorflow as tf

from beam_preprocess.pipeline import run_preprocess
from doctags.cli import main
from doctags_core import data_files, readers, records, schema
from doctags_core.config import ConfigError, DataConfig, load_config
from doctags_core.data_checks import DataRejected
from doctags_core.labels import LabelError, parse_labels
from tests.conftest import REPO, reuters_records, small_config, write_jsonl

DIRECT = ["--runner=DirectRunner"]


# ---------------------------------------------------------------- helpers
def _config(tmp_path, pattern, **sections):
    return load_config(small_config(tmp_path, "unused"), _flat(pattern, sections))


def _flat(pattern, sections):
    overrides = {"data.input_pattern": pattern}
    for section, values in sections.items():
        for key, value in values.items():
            overrides[f"{section}.{key}"] = value
    return overrides


def _tree(directory):
    """``{relative path: sha256}`` of every file under ``directory``."""
    out = {}
    for path in glob.glob(os.path.join(directory, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _dead_letters(data_dir):
    return [
        json.loads(line)
        for path in glob.glob(os.path.join(data_dir, schema.DEAD_LETTER_DIR, "*.jsonl"))
        for line in open(path, encoding="utf-8")
    ]


def _written_ids(data_dir):
    ids = []
    for split in ("train", "validation", "test"):
        files = glob.glob(schema.split_pattern(data_dir, split))
        for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            ex = tf.train.Example.FromString(rec.numpy())
            ids.append(ex.features.feature["id"].bytes_list.value[0].decode())
    return ids


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A published dataset (Reuters slice) that later runs must leave alone."""
    tmp = tmp_path_factory.mktemp("previous")
    corpus = write_jsonl(str(tmp / "a.jsonl.gz"), reuters_records(150, 50), compress=True)
    cfg = _config(tmp, corpus)
    meta = run_preprocess(cfg, DIRECT)
    return cfg, meta


def _copy_of(previous, tmp_path):
    """A private copy of the published dataset, for a test that runs over it."""
    cfg, meta = previous
    shutil.copytree(cfg.output_dir, tmp_path / "run")
    return str(tmp_path / "run"), meta


# ---------------------------------------------------------------- 1. bounded memory
def test_encoder_memory_grows_per_token_not_batch_times_longest():
    """One long document in a batch of 400: the token counting must not pad every row.

    ``tf.repeat(range(n), lengths)`` built ``n x longest`` values (~1 GB
    here); per-token counting needs a few MB. Peak RSS (VmHWM, reset through
    /proc/self/clear_refs) is measured around the batch in a fresh process.
    """
    script = """
import re
from beam_preprocess.encode import make_batch_encoder
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) // 1024
enc = make_batch_encoder(["lowercase"], keep_raw_text=False, vocab_shards=2, parts=1)
texts = ["a few words here"] * 399 + [" ".join(f"w{i % 5000}" for i in range(400_000))]
ids = [str(i) for i in range(400)]
enc(["a", "b"], ["hello world", "more words"], [], [0, 0, 0], [True, True])  # warm up
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := current RSS
before = hwm()
out = enc(ids, texts, [], [0] * 401, [True] * 400)
assert out.token_splits[-1] == 399 * 4 + 400_000
print("grew", hwm() - before, "MiB")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    grew = int(done.stdout.split()[1])
    assert grew < 250, f"encoding one 400k-token document among 400 grew RSS by {grew} MiB"


def test_long_texts_are_truncated_or_dead_lettered_by_config():
    cfg = DataConfig(input_pattern=("x",))
    raw = json.dumps({"id": "1", "text": "word " * 1000, "labels": ["a"]}).encode()
    doc = records.parse_record(raw, cfg, records.TextLimit(100, "truncate"))
    assert len(doc.text) == 100 and doc.truncated
    with pytest.raises(records.BadRecord) as e:
        records.parse_record(raw, cfg, records.TextLimit(100, "dead_letter"))
    assert e.value.reason == records.TOO_LONG and "preprocess.max_chars=100" in e.value.detail
    short = records.parse_record(raw, cfg, records.TextLimit(10_000, "truncate"))
    assert not short.truncated and short.text == "word " * 1000


def test_a_jsonl_line_over_max_record_bytes_is_skipped_as_it_streams(monkeypatch):
    lines = [b'{"id": "1"}', b"x" * 5000, b'{"id": "2"}', b"y" * 30, b'{"id": "3"}']
    monkeypatch.setattr(readers, "_CHUNK", 64)  # lines cross many reads
    items = list(readers.iter_jsonl_batches(io.BytesIO(b"\n".join(lines)), "f", 10, 1024))
    dead = [i for i in items if isinstance(i, dict)]
    kept = [raw for i in items if isinstance(i, list) for _, raw in i]
    assert kept == [lines[0], lines[2], lines[3], lines[4]]
    assert [d["reason"] for d in dead] == [records.RECORD_TOO_LARGE]
    assert "5000 bytes" in dead[0]["detail"] and dead[0]["record"].startswith("xxx")
    # the same at the very end of a file without a final newline
    items = list(readers.iter_jsonl_batches(io.BytesIO(lines[0] + b"\n" + lines[1]), "f", 10, 1024))
    assert [i["reason"] for i in items if isinstance(i, dict)] == [records.RECORD_TOO_LARGE]


def test_a_csv_line_over_max_record_bytes_is_a_dead_letter_and_reading_goes_on():
    data = "id,text,labels\n1,short,a\n2," + "z" * 3000 + ",b\n3,after,c\n"
    rows = list(records.iter_csv_rows(io.BytesIO(data.encode()), "f.csv", 1024))
    assert [r["id"] for r, _ in rows if r] == ["1", "3"]
    assert [d["reason"] for _, d in rows if d] == [records.RECORD_TOO_LARGE]


# ---------------------------------------------------------------- 3. input faults
def test_label_values_that_are_not_names_are_refused():
    with pytest.raises(LabelError, match="numeric_labels"):
        parse_labels([1, 2])
    assert parse_labels([1, 2], numeric=True) == ["1", "2"]
    assert parse_labels(7, numeric=True) == ["7"]
    for bad in ([1.5], [True], ['topic-09"'], ["a[b"], ["line\nbreak"]):
        with pytest.raises(LabelError):
            parse_labels(bad, numeric=True)
    assert parse_labels("topic-01, children's") == ["topic-01", "children's"]


def _gzip_truncated(path, lines):
    data = gzip.compress(b"".join(line + b"\n" for line in lines))
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    readable = zlib.decompressobj(31).decompress(data[: len(data) // 2])
    return readable.count(b"\n")  # complete lines before the damage


def test_unreadable_files_of_every_format_are_dead_letters_and_the_rest_goes_on(tmp_path):
    """Truncated and fake gzip (JSONL, CSV), a broken Parquet and TFRecord, plus BOMs.

    Records read before the damage are kept: a prefix of the damaged file,
    whose length the dead letter states ("after N record(s)"); at most the
    last read (1 MiB of JSONL, 8 KiB of CSV) before the damage is lost.
    """
    good = reuters_records(120, 40)
    write_jsonl(str(tmp_path / "good.jsonl.gz"), good[:100], compress=True)
    # JSONL with a byte order mark before its first record.
    with open(tmp_path / "bom.jsonl", "wb") as f:
        f.write(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in good[100:110]))
    # CSV with a byte order mark (Excel): its first column must still be "id".
    with open(tmp_path / "bom.csv", "w", encoding="utf-8-sig", newline="") as f:
        f.write("id,text,labels,split\n")
        for r in good[110:120]:
            f.write(f"{r['id']},Grain and oil news of the day,{r['labels'][0]},train\n")
    words = "grain exports rose sharply in the quarter " * 20
    many = [
        json.dumps({"id": f"t-{i}", "text": words, "labels": ["grain"], "split": "train"}).encode()
        for i in range(3000)
    ]
    complete = _gzip_truncated(tmp_path / "truncated.jsonl.gz", many)
    (tmp_path / "fake.jsonl.gz").write_bytes(json.dumps(good[0]).encode() + b"\n")
    csv_lines = [b"id,text,labels,split"] + [
        f"c-{i},Oil and grain prices rose again,crude,train".encode() for i in range(20000)
    ]
    csv_complete = _gzip_truncated(tmp_path / "truncated.csv.gz", csv_lines) - 1
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    with tf.io.TFRecordWriter(str(tmp_path / "broken.tfrecord")) as w:
        w.write(b"x")
    with open(tmp_path / "broken.tfrecord", "ab") as f:
        f.write(b"\x10" + b"\x00" * 11 + b"corrupt")

    patterns = [str(tmp_path / n) for n in ("*.jsonl*", "*.csv*", "*.parquet", "*.tfrecord")]
    cfg = _config(tmp_path, patterns, preprocess={"duplicate_ids": "keep"})
    meta = run_preprocess(cfg, DIRECT)

    dead = _dead_letters(cfg.data_dir)
    unreadable = {
        os.path.basename(d["source"]): d["detail"] for d in dead if d["reason"] == "unreadable_file"
    }
    assert sorted(unreadable) == [
        "broken.parquet",
        "broken.tfrecord",
        "fake.jsonl.gz",
        "truncated.csv.gz",
        "truncated.jsonl.gz",
    ]
    assert "BadGzipFile" in unreadable["fake.jsonl.gz"]
    ids = set(_written_ids(cfg.data_dir))
    assert {r["id"] for r in good[:120]} <= ids  # the BOM files parsed: none dead-lettered
    for name, prefix, readable in (
        ("truncated.jsonl.gz", "t-", complete),
        ("truncated.csv.gz", "c-", csv_complete),
    ):
        assert "EOFError" in unreadable[name]
        kept = {i for i in ids if i.startswith(prefix)}
        assert 0 < len(kept) <= readable, name
        assert kept == {f"{prefix}{i}" for i in range(len(kept))}, name  # a prefix of the file
        assert f"after {len(kept)} record(s)" in unreadable[name]
    assert meta["all_records_accounted_for"] and meta["all_documents_written"]
    # broken.tfrecord's one record before its damage is not an Example
    assert meta["dead_letter"]["by_reason"] == {"unreadable_file": 5, "invalid_example": 1}


def test_a_missing_configured_column_fails_before_any_work(previous, tmp_path):
    output, _ = _copy_of(previous, tmp_path)
    before = _tree(output)
    path = tmp_path / "no-labels.csv"
    path.write_text("id,text,split\n1,Oil rose,train\n", encoding="utf-8")
    cfg = load_config(small_config(tmp_path, str(path)), {"output_dir": output})
    with pytest.raises(ConfigError, match=r"^data\.label_field: 'labels' is not a column of .*"):
        run_preprocess(cfg, DIRECT)
    jsonl = write_jsonl(str(tmp_path / "no-id.jsonl"), [{"text": "x", "labels": ["a"]}])
    cfg = load_config(small_config(tmp_path, jsonl), {"output_dir": output})
    with pytest.raises(ConfigError, match=r"data\.id_field: 'id' .*data\.id_field: null"):
        run_preprocess(cfg, DIRECT)
    assert _tree(output) == before


def test_a_glob_with_an_unknown_extension_fails_before_any_work(previous, tmp_path, capsys):
    output, _ = _copy_of(previous, tmp_path)
    before = _tree(output)
    (tmp_path / "corpus.xml").write_text("<doc/>")
    good = write_jsonl(str(tmp_path / "good.jsonl"), reuters_records(5, 0))
    config = small_config(tmp_path, good)
    patterns = f"[{good}, {tmp_path / 'corpus.*'}]"
    args = ["preprocess", "--config", config, "--set", f"data.input_pattern={patterns}"]
    assert main([*args, "--set", f"output_dir={output}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.format: cannot tell the format of" in err[0]
    assert "corpus.xml" in err[0]
    assert _tree(output) == before


def test_silent_acceptances_each_get_a_rule(tmp_path):
    """Numbers as labels, a stray quote, repeated ids, empty documents, a huge text."""
    good = reuters_records(60, 20)
    rows = [json.dumps(r) for r in good]
    rows += [
        json.dumps({"id": "num", "text": "Wheat exports rose", "labels": [1, 2], "split": "train"}),
        '{"id": "quote", "text": "Grain prices", "labels": "grain, topic-09\\"", "split": "train"}',
        json.dumps({"id": "dup", "text": "Zinc output fell", "labels": ["zinc"], "split": "train"}),
        json.dumps({"id": "dup", "text": "Copper rose", "labels": ["copper"], "split": "train"}),
        json.dumps({"id": "digits", "text": "1987 12 34", "labels": ["earn"], "split": "train"}),
        json.dumps(
            {"id": "long", "text": "crude oil " * 3000, "labels": ["crude"], "split": "train"}
        ),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(rows) + "\n")
    cfg = _config(tmp_path, str(path), preprocess={"max_chars": 20000})
    meta = run_preprocess(cfg, DIRECT)
    reasons = {d["reason"]: d for d in _dead_letters(cfg.data_dir)}
    assert meta["dead_letter"]["by_reason"] == {
        "duplicate_id": 1,
        "empty_after_cleaning": 1,
        "invalid_labels": 2,
    }
    assert json.loads(reasons["duplicate_id"]["record"])["text"] == "Zinc output fell"
    assert "a different text" in reasons["duplicate_id"]["detail"]
    assert meta["empty_after_cleaning"] == 1 and meta["duplicate_ids"] == 1
    assert meta["truncated_documents"] == 1
    ids = _written_ids(cfg.data_dir)
    assert ids.count("dup") == 1 and "digits" not in ids and "long" in ids
    assert "1" not in open(os.path.join(cfg.data_dir, "labels.txt")).read().split()
    assert meta["all_records_accounted_for"] and meta["all_documents_written"]
    assert len(ids) == meta["documents"]["total"] == len(good) + 2


def test_too_many_dead_letters_stop_the_run_and_keep_the_previous_dataset(previous, tmp_path):
    output, _ = _copy_of(previous, tmp_path)
    before = _tree(output)
    good = [json.dumps(r) for r in reuters_records(40, 10)]
    bad = [json.dumps({"id": f"bad-{i}", "text": "x", "labels": ["a"]})[:-1] for i in range(30)]
    path = tmp_path / "half-bad.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    cfg = load_config(small_config(tmp_path, str(path)), {"output_dir": output})
    with pytest.raises(DataRejected) as e:
        run_preprocess(cfg, DIRECT)
    message = str(e.value)
    assert "30 of 80 (37.5%) records are dead letters" in message
    assert "invalid_json 30 (e.g. " in message and "max_dead_letter_fraction=0.1" in message
    assert _tree(output) == before  # nothing published
    assert os.path.exists(os.path.join(e.value.staging, "dead_letter"))  # kept to inspect


# ---------------------------------------------------------------- 2. atomic publish
def _staged_shards(output):
    return glob.glob(os.path.join(output, ".data-staging-*", "train", "part-*"))


def test_a_killed_run_leaves_the_previous_dataset_and_the_next_run_cleans_up(previous, tmp_path):
    """SIGKILL once the new shards are in place (before or while metadata is written)."""
    output, meta = _copy_of(previous, tmp_path)
    before = _tree(output)
    other = write_jsonl(str(tmp_path / "b.jsonl.gz"), reuters_records(300, 60), compress=True)
    config = small_config(tmp_path, other)
    cfg = load_config(config, {"output_dir": output})
    command = [sys.executable, "-m", "doctags", "preprocess", "--config", config]
    command += ["--set", f"output_dir={output}"]
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + 600
    while not _staged_shards(output) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    staging = glob.glob(os.path.join(output, ".data-staging-*"))
    assert staging, "the run finished before it could be killed"
    assert _tree(output + "/data") == {
        k[len("data/") :]: v for k, v in before.items() if k.startswith("data/")
    }
    assert data_files.check_dataset(cfg.data_dir)["run_id"] == meta["run_id"]
    stale_temp = os.path.join(cfg.data_dir, ".temp-old")
    os.makedirs(stale_temp)
    meta = run_preprocess(cfg, DIRECT)
    assert not glob.glob(os.path.join(output, ".data-*")) and not os.path.exists(stale_temp)
    assert data_files.check_dataset(cfg.data_dir)["run_id"] == meta["run_id"]


def test_shards_of_another_run_are_refused_by_train(previous, tmp_path):
    output, meta = _copy_of(previous, tmp_path)
    config = small_config(tmp_path, previous[0].data.input_pattern[0])
    cfg = load_config(config, {"output_dir": output})
    assert data_files.check_dataset(cfg.data_dir)["run_id"] == meta["run_id"]
    shard = sorted(glob.glob(schema.split_pattern(cfg.data_dir, "train")))[0]
    stray = shard.replace(meta["run_id"], "20200101T000000Z-0badc0de")
    shutil.copy(shard, stray)
    with pytest.raises(data_files.DataError, match=r"train/ holds 1 shard\(s\) of another run"):
        data_files.check_dataset(cfg.data_dir)
    assert main(["train", "--config", config, "--set", f"output_dir={output}"]) == 2
    os.remove(stray)
    with open(os.path.join(cfg.data_dir, "labels.txt"), "a") as f:
        f.write("extra-label\n")
    with pytest.raises(data_files.DataError, match="labels.txt is not the file of run"):
        data_files.check_dataset(cfg.data_dir)


def test_a_run_killed_mid_swap_gets_its_previous_dataset_back(previous, tmp_path):
    """No data/ but a .data-old-*: the next run restores it before anything else."""
    output, meta = _copy_of(previous, tmp_path)
    before = _tree(os.path.join(output, "data"))
    os.rename(os.path.join(output, "data"), os.path.join(output, ".data-old-20200101T000000Z-1"))
    rows = [{"id": str(i), "text": "Oil", "labels": [i], "split": "train"} for i in range(20)]
    path = write_jsonl(str(tmp_path / "numbers.jsonl"), rows)  # every label is a number
    cfg = load_config(small_config(tmp_path, path), {"output_dir": output})
    with pytest.raises(DataRejected, match="invalid_labels 20"):
        run_preprocess(cfg, DIRECT)
    assert _tree(os.path.join(output, "data")) == before
    assert data_files.check_dataset(os.path.join(output, "data"))["run_id"] == meta["run_id"]
