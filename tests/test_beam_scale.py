"""The Beam job at scale: streaming structure, formats, dedupe, encoder, sink."""

import glob
import gzip
import io
import json
import os
import subprocess
import sys
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_preprocess import batches as batches_mod
from beam_preprocess import sinks
from beam_preprocess.encode import make_batch_encoder
from beam_preprocess.pipeline import build_pipeline, run_preprocess
from doctags_core import beam_io, readers, records, schema, synth
from doctags_core.cleaning import CLEANING_STEPS, make_batch_cleaner
from doctags_core.config import ConfigError, DataConfig, config_from_dict, load_config
from tests.conftest import REUTERS, reuters_records, small_config

DIRECT = ["--runner=DirectRunner"]
SYNTH_FIELDS = {"text_fields": ["title", "text"], "split_field": None}


# ---------------------------------------------------------------- readers
def test_jsonl_reader_batches_lines_like_beams_text_reader(monkeypatch):
    data = b'{"a": 1}\r\n{"a": 2}\n\n{"a": 3}'  # CRLF, a blank line, no final newline
    monkeypatch.setattr(readers, "_CHUNK", 5)  # force lines across read boundaries
    got = list(readers.iter_jsonl_batches(io.BytesIO(data), "f", batch_size=3))
    assert got == [[("f", b'{"a": 1}'), ("f", b'{"a": 2}'), ("f", b"")], [("f", b'{"a": 3}')]]


def test_parquet_reader_reads_configured_columns_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "x.parquet")
    table = pa.table(
        {
            "id": [1, 2, 3],
            "text": ["a", "b", None],
            "labels": [["x"], ["x", "y"], []],
            "unused": [b"\x00" * 10] * 3,
        }
    )
    pq.write_table(table, path, row_group_size=2)
    cfg = DataConfig(input_pattern=("x",))
    with open(path, "rb") as f:
        got = list(readers.iter_parquet_batches(f, path, 2, cfg))
    assert [len(b) for b in got] == [2, 1]
    rows = [row for batch in got for _, row in batch]
    assert rows[1] == {"id": 2, "text": "b", "labels": ["x", "y"]}  # "unused" not read
    with pytest.raises(records.BadRecord, match="missing_text"):
        records.parse_record(rows[2], cfg)
    broken = io.BytesIO(b"not a parquet file at all")
    (dead,) = list(readers.iter_parquet_batches(broken, "bad.parquet", 2, cfg))
    assert dead["reason"] == records.UNREADABLE_FILE


def test_tfrecord_reader_decodes_examples_and_dead_letters_the_rest(tmp_path):
    def example(**fields):
        feature = {
            k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)) for k, v in fields.items()
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    path = str(tmp_path / "x.tfrecord.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        w.write(example(id=[b"1"], text=[b"Oil rose"], labels=[b"crude", b"oil"]))
        w.write(b"\xff not an example")
        w.write(example(id=[b"2"], text=[b"caf\xe9"], labels=[b"a, b"]))
    cfg = DataConfig(input_pattern=("x",))
    items = list(readers.iter_tfrecord_batches(path, 10, cfg))
    dead = [i for i in items if isinstance(i, dict)]
    rows = [row for i in items if isinstance(i, list) for _, row in i]
    assert [d["reason"] for d in dead] == [records.INVALID_EXAMPLE]
    assert records.parse_record(rows[0], cfg) == records.Document(
        "1", "Oil rose", ("crude", "oil"), None
    )
    with pytest.raises(records.BadRecord, match="invalid_utf8"):
        records.parse_record(rows[1], cfg)  # undecodable bytes are caught, not crashed on
    truncated = str(tmp_path / "corrupt.tfrecord")
    with tf.io.TFRecordWriter(truncated) as w:
        w.write(example(id=[b"1"], text=[b"x"], labels=[b"a"]))
    with open(truncated, "ab") as f:
        f.write(b"\x10" + b"\x00" * 11 + b"corrupt header checksum")
    items = list(readers.iter_tfrecord_batches(truncated, 10, cfg))
    assert items[-1]["reason"] == records.UNREADABLE_FILE
    assert sum(len(i) for i in items if isinstance(i, list)) == 1


# ---------------------------------------------------------------- encoder
def _add_plain_counts(want: dict, tokens: list) -> None:
    """One training document's tokens into ``{token: [occurrences, documents]}``."""
    for t in tokens:
        want[t][0] += 1
    for t in set(tokens):
        want[t][1] += 1


def _drained(enc) -> tuple[dict, object]:
    """``({token: [occurrences, documents]}, counts)`` drained from an encoder."""
    counts = enc.drain_counts()
    columns = zip(counts.tokens, counts.counts, counts.doc_counts)
    return {t: [int(n), int(df)] for t, n, df in columns}, counts


def test_encoder_matches_make_example_and_counts_train_tokens_exactly():
    docs = reuters_records(60, 20) + [{"id": "é" * 200, "text": "x " * 3000, "labels": []}]
    enc = make_batch_encoder(list(CLEANING_STEPS), keep_raw_text=True, vocab_shards=4)
    cleaner = make_batch_cleaner(list(CLEANING_STEPS))
    want_counts = defaultdict(lambda: [0, 0])
    for lo in (0, 50):  # two batches into the same bundle tables
        part = docs[lo : lo + 50]
        train = np.array([i % 3 != 0 for i in range(len(part))])
        labels = [label for d in part for label in d["labels"]]
        label_splits = np.cumsum([0] + [len(d["labels"]) for d in part])
        # The first batch keeps every raw text (the call's default), the second
        # only those of every other document (preprocess.raw_text_splits).
        keep = None if lo == 0 else np.arange(len(part)) % 2 == 0
        texts = [d["text"] for d in part]
        out = enc([d["id"] for d in part], texts, labels, label_splits, train, keep)
        values, splits = (t.numpy() for t in cleaner(tf.constant(texts)))
        assert (splits == out.token_splits).all()
        for i, d in enumerate(part):
            tokens = list(values[splits[i] : splits[i + 1]])
            raw = d["text"] if keep is None or keep[i] else ""
            want = schema.make_example(d["id"], tokens, d["labels"], raw)
            assert tf.train.Example.FromString(out.examples[i]) == tf.train.Example.FromString(want)
            if train[i]:
                _add_plain_counts(want_counts, tokens)
    got, counts = _drained(enc)
    assert got == dict(want_counts)
    assert set(counts.shards.tolist()) <= {0, 1, 2, 3}
    assert len(enc.drain_counts().tokens) == 0  # drained


@pytest.mark.parametrize("n_train", [0, 1, 17, 30])
def test_train_first_batches_count_the_same_tokens_as_any_order(n_train):
    """Training documents first (the pipeline's order) take the graph's slice path.

    Its counts must equal a plain count of the training documents' tokens,
    with documents that clean to nothing (no token) inside and at the end
    of the training prefix.
    """
    docs = reuters_records(30, 0)
    for i in (3, n_train - 1, 29):
        if 0 <= i < 30:
            docs[i] = {**docs[i], "text": "123 456"}  # no token left after cleaning
    enc = make_batch_encoder(list(CLEANING_STEPS), keep_raw_text=False, vocab_shards=4)
    cleaner = make_batch_cleaner(list(CLEANING_STEPS))
    train = np.arange(30) < n_train
    labels = [label for d in docs for label in d["labels"]]
    label_splits = np.cumsum([0] + [len(d["labels"]) for d in docs])
    enc([d["id"] for d in docs], [d["text"] for d in docs], labels, label_splits, train)
    values, splits = (t.numpy() for t in cleaner(tf.constant([d["text"] for d in docs])))
    want = defaultdict(lambda: [0, 0])
    for i in range(n_train):
        _add_plain_counts(want, list(values[splits[i] : splits[i + 1]]))
    assert _drained(enc)[0] == dict(want)


def test_train_first_keeps_each_splits_order():
    cfg = DataConfig(text_fields=("text",), validation_fraction=0.3, test_fraction=0.3)
    docs = [records.Document(f"d{i}", "text", ("a",), None, False) for i in range(40)]
    ordered, splits = batches_mod.train_first(docs, cfg)
    assert sorted(d.doc_id for d in ordered) == sorted(d.doc_id for d in docs)
    first_other = splits.index(next(s for s in splits if s != "train"))
    assert set(splits[:first_other]) == {"train"} and "train" not in splits[first_other:]
    position = {d.doc_id: i for i, d in enumerate(docs)}
    for split in ("train", "validation", "test"):
        ids = [position[d.doc_id] for d, s in zip(ordered, splits) if s == split]
        assert ids == sorted(ids) and ids


def test_token_counts_stay_right_over_many_bundles():
    """Each drain starts a fresh table: a drained table must not fill with old keys.

    A DenseHashTable drained with ``remove`` keeps tombstones and failed its
    lookups after a dozen bundles; 40 bundles of new words each must give
    exactly each bundle's counts.
    """
    enc = make_batch_encoder(["lowercase"], keep_raw_text=False, vocab_shards=4)
    for bundle in range(40):
        texts = [" ".join(f"w{bundle}x{i}" for i in range(300)) + " common common"] * 2
        enc(["a", "b"], texts, [], [0, 0, 0], [True, False])
        got = _drained(enc)[0]
        assert len(got) == 301 and got[b"common"] == [2, 1]
        assert got[f"w{bundle}x7".encode()] == [1, 1]


def _encode_all(enc, batches: list) -> list:
    """Each batch's serialized Examples, encoded by ``enc`` (every document a train one)."""
    out = []
    for part in batches:
        labels = [label for d in part for label in d["labels"]]
        label_splits = np.cumsum([0] + [len(d["labels"]) for d in part])
        ids, texts = [d["id"] for d in part], [d["text"] for d in part]
        out.append(
            enc(ids, texts, labels, label_splits, np.ones(len(part), bool)).examples.tolist()
        )
    return out


def test_encoders_share_one_traced_graph_and_keep_their_own_counts():
    """The encode threads' encoders call one graph, traced once per process, at the same time.

    Each keeps its own count table (an input of the graph), so two
    encoders on two threads must give the Examples of one encoder alone,
    and their drained counts must add up to its counts.
    """
    from concurrent.futures import ThreadPoolExecutor

    steps = list(CLEANING_STEPS)
    ref, a, b = (make_batch_encoder(steps, keep_raw_text=False, vocab_shards=4) for _ in range(3))
    assert a._encode is b._encode is ref._encode
    assert make_batch_encoder(steps, keep_raw_text=True, vocab_shards=4)._encode is not a._encode
    docs = reuters_records(96, 0)
    batches = [docs[i : i + 8] for i in range(0, len(docs), 8)]
    want = _encode_all(ref, batches)
    with ThreadPoolExecutor(max_workers=2) as pool:
        halves = pool.map(_encode_all, (a, b), (batches[0::2], batches[1::2]))
        got_a, got_b = list(halves)
    assert got_a == want[0::2] and got_b == want[1::2]
    both = defaultdict(lambda: [0, 0])
    for enc in (a, b):
        for token, (n, df) in _drained(enc)[0].items():
            both[token][0] += n
            both[token][1] += df
    assert dict(both) == _drained(ref)[0]


def _run_in_fresh_python(script: str) -> None:
    """Runs ``script`` in a new interpreter (no TensorFlow imported yet); it prints ok."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_workers_import_tensorflow_without_keras_and_keras_still_works_later():
    """The worker's TF import skips Keras and tunes the pools; ``import keras`` still works."""
    script = """
import sys
from doctags_core import tf_runtime
from doctags_core.tf_runtime import import_tensorflow
tf_runtime.dedicate_process_to_preprocessing()
tf = import_tensorflow()
assert "keras" not in sys.modules and "sklearn" not in sys.modules, "keras was imported"
assert "keras.src.optimizers" not in sys.modules, "the absent-module mark was left behind"
from beam_preprocess.encode import make_batch_encoder
enc = make_batch_encoder(["lowercase"], keep_raw_text=False, vocab_shards=2)
assert enc(["a"], ["Hello World"], [], [0, 0], [True]).token_splits.tolist() == [0, 2]
from tensorflow.python.eager import context
assert tf.config.threading.get_intra_op_parallelism_threads() == 1
assert context.context().config.experimental.disable_thread_spinning
import keras
keras.optimizers.Adam(0.01)
model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
print("ok")
"""
    _run_in_fresh_python(script)


def test_a_program_that_preprocesses_in_process_then_trains_keeps_tensorflow_defaults():
    """The Beam job run from a library call (a notebook, the quality bench) must not
    leave TensorFlow on one intra-op thread for the training that follows; the
    ``doctags preprocess`` command, a process of its own, does tune."""
    script = """
import sys
from doctags_core.tf_runtime import import_tensorflow, tunes_thread_pools
assert not tunes_thread_pools()
tf = import_tensorflow()
assert "keras" not in sys.modules
from tensorflow.python.eager import context
assert tf.config.threading.get_intra_op_parallelism_threads() == 0  # TF's default
assert not context.context().config.experimental.disable_thread_spinning
print("ok")
"""
    _run_in_fresh_python(script)


def test_the_preprocess_command_dedicates_its_process(monkeypatch):
    """``doctags preprocess`` as a program marks its process before the job starts."""
    from doctags import cli
    from doctags_core import tf_runtime

    seen = {}

    def fake_preprocess(cfg, args):
        seen["tunes"] = tf_runtime.tunes_thread_pools()

    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "reuters.yaml")
    monkeypatch.setattr(tf_runtime, "_dedicated_to_preprocessing", False)
    monkeypatch.setitem(cli.COMMANDS, "preprocess", fake_preprocess)
    monkeypatch.setattr(cli.console, "NativeLogFilter", lambda: None)  # keep pytest's stderr
    monkeypatch.setattr(sys, "argv", ["doctags", "preprocess", "--config", config])
    assert cli.main() == 0
    assert seen == {"tunes": True}
    monkeypatch.setattr(tf_runtime, "_dedicated_to_preprocessing", False)
    assert cli.main(["preprocess", "--config", config]) == 0  # a caller's process
    assert seen == {"tunes": False}


def test_a_process_that_imported_tensorflow_first_keeps_its_thread_settings():
    """``doctags run`` trains after preprocessing in one process: its TF must stay untuned."""
    script = """
import tensorflow as tf
from tensorflow.python.eager import context
from doctags_core.tf_runtime import import_tensorflow
assert import_tensorflow() is tf
assert tf.config.threading.get_intra_op_parallelism_threads() == 0  # TF's default
assert not context.context().config.experimental.disable_thread_spinning
print("ok")
"""
    _run_in_fresh_python(script)


# ---------------------------------------------------------------- sink
def test_sink_writes_every_record_without_a_shuffle_and_an_empty_shard_per_empty_split(tmp_path):
    data_dir = str(tmp_path / "data")
    batches = [("train", [f"t{i}-{j}".encode() for j in range(5)]) for i in range(6)]
    batches.append(("test", [b"only-test"]))
    with TestPipeline(argv=DIRECT) as p:
        summary = (
            p
            | beam.Create(batches)
            | sinks.WriteTFRecordBatches(data_dir, ("train", "validation", "test"), 2, 1)
        )
        assert_that(
            summary | beam.Map(lambda s: {k: v["examples"] for k, v in s.items()}),
            equal_to([{"train": 30, "validation": 0, "test": 1}]),
        )
    read = {}
    for split in ("train", "validation", "test"):
        files = sorted(glob.glob(schema.split_pattern(data_dir, split)))
        assert files and files[0].endswith(f"-of-{len(files):05d}.tfrecord.gz")
        read[split] = sorted(
            r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        )
    assert read["train"] == sorted(r for _, batch in batches[:-1] for r in batch)
    assert read["validation"] == [] and read["test"] == [b"only-test"]
    assert not glob.glob(os.path.join(data_dir, ".temp-*"))


def _shards(data_dir: str, split: str) -> list[list[bytes]]:
    files = sorted(glob.glob(schema.split_pattern(data_dir, split)))
    return [[r.numpy() for r in tf.data.TFRecordDataset(f, compression_type="GZIP")] for f in files]


def test_the_same_records_get_the_same_shard_numbers_on_every_run(tmp_path):
    """Shard order is the trainer's read order: numbered by chance, two runs trained apart.

    Six files per bundle: a chance numbering matches the first run's with
    probability 1/720 per run.
    """
    batches = [("train", [f"t{i}-{j}".encode() for j in range(3)]) for i in range(24)]
    runs = []
    for run in range(3):
        data_dir = str(tmp_path / f"data{run}")
        with TestPipeline(argv=DIRECT) as p:
            _ = (
                p
                | beam.Create(batches)
                | sinks.WriteTFRecordBatches(data_dir, ("train",), 6, 1, run_id=f"run{run}")
            )
        runs.append(_shards(data_dir, "train"))
    assert len(runs[0]) == 6 and sum(len(s) for s in runs[0]) == 72
    assert runs[1] == runs[0] and runs[2] == runs[0]


# ---------------------------------------------------------------- structure
def _group_by_keys(cfg):
    pipeline = beam.Pipeline(options=PipelineOptions(DIRECT))
    build_pipeline(pipeline, cfg)
    proto = pipeline.to_runner_api()
    return sorted(
        t.unique_name
        for t in proto.components.transforms.values()
        if t.spec.urn == "beam:transform:group_by_key:v1"
    )


def test_no_step_groups_documents_or_tokens(tmp_path):
    """Every GroupByKey of the job sees file names or small tables, never documents.

    The DirectRunner holds a GroupByKey's whole input in memory, so a grouping
    of documents (e.g. a sink with a fixed shard count) breaks bounded memory.
    This list is exhaustive: a new grouping step must be added here on purpose.
    """
    cfg = load_config(small_config(tmp_path, REUTERS))
    small = [
        "ComputeStatistics/MergeStatistics/CombinePerKey/GroupByKey",
        "ComputeVocabulary/MergeCountsPerShard/GroupByKey",  # per-bundle token tables
        "ComputeVocabulary/TopKGlobal/CombinePerKey/GroupByKey",
        "CountRecordsRead/CombinePerKey/GroupByKey",  # counts
        "CountFields/CombinePerKey/GroupByKey",  # per-field counts (data report)
        "ExamplesToDict/ExamplesToDict/CombinePerKey/GroupByKey",  # one dead letter per reason
        "FirstExamplePerReason/GroupByKey",  # combined: one per reason and bundle
        "ReadRawRecords/SpreadFiles/ReshufflePerKey/GroupByKey",  # file names
        "WriteDeadLetters/CountReasons/CombinePerKey(CountCombineFn)/GroupByKey",
        "WriteDeadLetters/ToDict/ToDict/CombinePerKey/GroupByKey",
        "WriteDeadLetters/WriteJsonl/Write/WriteImpl/GroupByKey",  # written file names
    ]
    ids = [
        "FindRepeats/ReadRawRecords/SpreadFiles/ReshufflePerKey/GroupByKey",
        "FindRepeats/RepeatedIds/CombinePerKey/GroupByKey",  # one uint64 per id
        "ParseDocuments/GroupDuplicateIds",  # only documents whose id repeats
    ]
    assert _group_by_keys(cfg) == sorted(small + ids)
    unchecked = load_config(small_config(tmp_path, REUTERS, preprocess={"duplicate_ids": "keep"}))
    assert _group_by_keys(unchecked) == sorted(small)
    deduped = load_config(small_config(tmp_path, REUTERS, preprocess={"dedupe": True}))
    assert _group_by_keys(deduped) == sorted(
        small
        + ids
        + [
            "FindRepeats/DuplicatedHashes/CombinePerKey/GroupByKey",  # one uint64 per doc
            "ParseDocuments/GroupDuplicates",  # only documents whose text repeats
        ]
    )


def _fused_stage_of(cfg, transform_name):
    """The names of the transforms the FnApiRunner runs in one stage with ``transform_name``."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    pipeline = beam.Pipeline(options=PipelineOptions(DIRECT))
    build_pipeline(pipeline, cfg)
    _, stages = fn_runner.FnApiRunner().create_stages(pipeline.to_runner_api())
    (stage,) = [
        s for s in stages if any(t.unique_name.startswith(transform_name) for t in s.transforms)
    ]
    return {t.unique_name for t in stage.transforms}


@pytest.mark.parametrize("preprocess", [{}, {"dedupe": True}, {"duplicate_ids": "keep"}])
def test_documents_flow_from_reading_to_writing_in_one_stage(tmp_path, preprocess):
    """No stage boundary between reading and writing, so no runner holds the documents.

    A Flatten of the parsed documents with those kept from duplicate groups
    made the FnApiRunner buffer every parsed document until the groups were
    done (peak RSS 785 -> 1,183 MiB at 100k documents); those kept documents
    are now encoded and written on their own.
    """
    cfg = load_config(small_config(tmp_path, REUTERS, preprocess=preprocess))
    stage = _fused_stage_of(cfg, "ReadRawRecords/ReadFileBatches")
    for step in (
        "ParseDocuments/ParseBatch",
        "CleanAndEncode/EncodeBatch",
        "WriteExamples/WriteTFRecords/WriteBundleFiles",
    ):
        assert any(name.startswith(step) for name in stage), step


# ---------------------------------------------------------------- formats, end to end
def _written(data_dir):
    out = {}
    for split in ("train", "validation", "test"):
        files = glob.glob(schema.split_pattern(data_dir, split))
        for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            f = tf.train.Example.FromString(rec.numpy()).features.feature
            out[f["id"].bytes_list.value[0].decode()] = (
                split,
                f[schema.CLEAN_TEXT].bytes_list.value[0],
                tuple(f["labels"].bytes_list.value),
            )
    return out


def test_every_input_format_gives_the_same_output(tmp_path):
    spec = synth.SynthSpec(documents=240, labels=30, documents_per_shard=80, seed=5)
    results = {}
    for fmt in synth.FORMATS:
        corpus = tmp_path / fmt
        synth.write_corpus(spec, str(corpus), fmt)
        cfg = load_config(
            small_config(
                tmp_path / fmt, str(corpus / "corpus-*"), data={**SYNTH_FIELDS, "format": fmt}
            )
        )
        meta = run_preprocess(cfg, DIRECT)
        assert meta["records_read"] == meta["documents"]["total"] == 240, fmt
        assert meta["all_records_accounted_for"] and meta["dead_letter"]["total"] == 0
        assert sum(meta["examples_written"].values()) == 240 and meta["all_documents_written"]
        vocab = open(os.path.join(cfg.data_dir, "vocab.txt")).read()
        labels = open(os.path.join(cfg.data_dir, "labels.txt")).read()
        results[fmt] = (vocab, labels, _written(cfg.data_dir))
    first = results["jsonl"]
    assert len(first[2]) == 240 and len(first[0].split()) > 500
    for fmt, result in results.items():
        assert result == first, fmt


def test_encode_threads_do_not_change_the_output(tmp_path):
    """Batches encoded concurrently (one graph, own count tables) == one thread, two parts."""
    spec = synth.SynthSpec(documents=240, labels=30, documents_per_shard=80, seed=6)
    corpus = tmp_path / "corpus"
    synth.write_corpus(spec, str(corpus), "jsonl")
    results = {}
    for threads in (1, 3):
        (tmp_path / f"t{threads}").mkdir()
        cfg = load_config(
            small_config(
                tmp_path / f"t{threads}",
                str(corpus / "corpus-*.jsonl.gz"),
                data=SYNTH_FIELDS,
                preprocess={"encode_threads": threads, "batch_size": 16},
            )
        )
        meta = run_preprocess(cfg, DIRECT)
        assert meta["all_records_accounted_for"] and meta["documents"]["total"] == 240
        counts = open(os.path.join(cfg.data_dir, schema.VOCAB_COUNTS_FILE)).read()
        results[threads] = (counts, _written(cfg.data_dir), meta["token_lengths"])
    assert len(results[1][0].splitlines()) > 500 and len(results[1][1]) == 240
    assert results[3] == results[1]


def test_dedupe_keeps_one_document_per_normalized_text_and_accounts_for_the_rest(tmp_path):
    spec = synth.SynthSpec(documents=300, labels=20, duplicate_fraction=0.15, seed=9)
    docs = synth.generate_shard(spec, 0)
    docs.append(dict(docs[10]))  # an exact copy, same id too
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for part in range(2):  # duplicates across files as well
        with gzip.open(corpus / f"part-{part}.jsonl.gz", "wt") as f:
            for d in docs[part::2]:
                f.write(json.dumps(d) + "\n")
    groups = defaultdict(list)
    for d in docs:
        groups[records.normalized_text_hash(d["title"] + "\n" + d["text"])].append(d["id"])
    removed = len(docs) - len(groups)
    assert removed >= 30

    cfg = load_config(
        small_config(
            tmp_path, str(corpus / "*.jsonl.gz"), data=SYNTH_FIELDS, preprocess={"dedupe": True}
        )
    )
    meta = run_preprocess(cfg, DIRECT)
    assert meta["records_read"] == len(docs)
    assert meta["documents"]["total"] == len(groups)
    # The copy of docs[10] repeats its id too: one duplicate_id, the rest duplicates.
    assert meta["duplicates_removed"] == removed - 1
    assert meta["dead_letter"]["by_reason"] == {"duplicate": removed - 1, "duplicate_id": 1}
    assert meta["all_records_accounted_for"]
    assert sorted(_written(cfg.data_dir)) == sorted(min(ids) for ids in groups.values())
    dead = [
        json.loads(line)
        for path in glob.glob(os.path.join(cfg.data_dir, "dead_letter", "*.jsonl"))
        for line in open(path)
    ]
    assert len(dead) == removed
    by_text = [d for d in dead if d["reason"] == "duplicate"]
    assert all("same normalized text as document" in d["detail"] for d in by_text)
    (by_id,) = [d for d in dead if d["reason"] == "duplicate_id"]
    assert json.loads(by_id["record"])["id"] == docs[10]["id"]


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("data", "format", "xml", r"data\.format: must be one of .*parquet.*tfrecord"),
        ("preprocess", "dedupe", "yes", r"preprocess\.dedupe: expected true or false"),
        ("preprocess", "compression_level", 0, r"preprocess\.compression_level: must be a zlib"),
        ("preprocess", "compression_level", 10, r"preprocess\.compression_level"),
    ],
)
def test_new_config_keys_are_validated(section, key, value, message):
    raw = {"data": {"input_pattern": REUTERS}}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_new_formats_and_dedupe_load():
    for fmt in ("parquet", "tfrecord"):
        cfg = config_from_dict({"data": {"input_pattern": REUTERS, "format": fmt}})
        assert cfg.data.format == fmt
    cfg = config_from_dict({"data": {"input_pattern": REUTERS}, "preprocess": {"dedupe": True}})
    assert cfg.preprocess.dedupe is True and cfg.preprocess.compression_level == 1


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("a.jsonl.gz", "jsonl"),
        ("b.ndjson", "jsonl"),
        ("c.csv.gz", "csv"),
        ("d-*.parquet", "parquet"),
        ("e.pq", "parquet"),
        ("f-*.tfrecord.gz", "tfrecord"),
        ("g.tfrecords", "tfrecord"),
    ],
)
def test_format_from_extension(name, fmt):
    assert beam_io.input_format(name, "auto") == fmt


def test_unknown_extension_asks_for_data_format():
    with pytest.raises(ValueError, match="set data.format to jsonl, csv, parquet or tfrecord"):
        beam_io.input_format("corpus.xml", "auto")


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, 1 << 20])
def test_jsonl_reader_gives_the_same_records_whatever_the_read_size(monkeypatch, chunk):
    lines = [b'{"a": 1}\r', b"", b"x" * 40, b'{"b": 2}', b"\r", b"y" * 10 + b"\r", b'{"c": 3}']
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    items = list(readers.iter_jsonl_batches(io.BytesIO(b"\n".join(lines)), "f", 4, 30))
    kept = [raw for item in items if isinstance(item, list) for _, raw in item]
    assert kept == [line.removesuffix(b"\r") for line in lines if len(line) <= 30]
    assert [item["reason"] for item in items if isinstance(item, dict)] == [
        records.RECORD_TOO_LARGE
    ]
    assert all(0 < len(item) <= 4 for item in items if isinstance(item, list))


def test_framed_records_read_back_with_tensorflows_crc_checks(tmp_path):
    from beam_preprocess.sinks import frame_records

    records_in = [b"", b"a", b"bb" * 70, b"a", b"cc" * 70, b"x" * 70_000, b"b"]
    path = tmp_path / "plain.tfrecord"
    path.write_bytes(frame_records(records_in[:3]) + frame_records(records_in[3:]))
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert read == records_in
