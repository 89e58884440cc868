import csv
import gzip
import json
import os
from collections import Counter

import numpy as np
import pytest

from doctags_core import synth

SPEC = synth.SynthSpec(documents=3000, documents_per_shard=1000, seed=7)


@pytest.fixture(scope="module")
def docs():
    return [d for i in range(SPEC.num_shards) for d in synth.generate_shard(SPEC, i)]


def test_same_seed_same_corpus_any_worker_count(tmp_path):
    one = synth.write_corpus(SPEC, str(tmp_path / "one"), "jsonl", workers=1)
    two = synth.write_corpus(SPEC, str(tmp_path / "two"), "jsonl", workers=2)
    assert [os.path.basename(p) for p in one] == [os.path.basename(p) for p in two]
    for a, b in zip(one, two):
        assert gzip.open(a).read() == gzip.open(b).read()
    other = synth.generate_shard(synth.SynthSpec(documents=1000, seed=8), 0)
    assert other[0]["text"] != synth.generate_shard(SPEC, 0)[0]["text"]


def test_shape_of_the_corpus(docs):
    assert len(docs) == SPEC.documents
    assert len({d["id"] for d in docs}) == len(docs)
    words = np.array([len(d["text"].split()) for d in docs])
    assert 180 <= words.mean() <= 220  # default ~200 words
    per_doc = np.array([len(d["labels"]) for d in docs])
    assert per_doc.min() >= 1 and per_doc.max() <= SPEC.max_labels
    assert 1.4 <= per_doc.mean() <= 1.8  # realistic: a few labels per document
    assert all(len(set(d["labels"])) == len(d["labels"]) for d in docs)
    # long tail over 500 labels: a few labels are frequent, most are rare
    counts = Counter(label for d in docs for label in d["labels"])
    ranked = sorted(counts.values(), reverse=True)
    assert ranked[0] > 0.1 * len(docs)
    assert ranked[0] > 20 * np.median(ranked)
    assert len(counts) > 250
    # Zipfian vocabulary: the most frequent word is far above the median word
    freq = sorted(Counter(w for d in docs[:500] for w in d["text"].lower().split()).values())
    assert freq[-1] > 100 * np.median(freq)


def test_labels_are_learnable_from_the_text(docs):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    texts = [d["title"] + "\n" + d["text"] for d in docs]
    x = CountVectorizer(min_df=2).fit_transform(texts)
    for label in ("topic-000", "topic-005", "topic-020"):
        y = np.array([label in d["labels"] for d in docs])
        model = LogisticRegression(max_iter=300).fit(x[:2000], y[:2000])
        auc = roc_auc_score(y[2000:], model.decision_function(x[2000:]))
        assert auc > 0.95, (label, auc)


def test_noise_for_the_cleaning_steps_is_present(docs):
    text = " ".join(d["text"] for d in docs[:500])
    for token in ("<p>", "http://", "'s", "&amp;", "1987"):
        assert token in text, token


def test_duplicates_differ_only_in_case_and_spacing():
    spec = synth.SynthSpec(documents=500, duplicate_fraction=0.2, seed=3)
    docs = synth.generate_shard(spec, 0)
    norm = Counter(" ".join(d["text"].casefold().split()) for d in docs)
    repeated = sum(n - 1 for n in norm.values())
    assert 60 <= repeated <= 140
    assert len({d["id"] for d in docs}) == len(docs)


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_every_format_holds_the_same_documents(tmp_path, fmt):
    spec = synth.SynthSpec(documents=120, documents_per_shard=50, seed=1)
    paths = synth.write_corpus(spec, str(tmp_path), fmt)
    assert len(paths) == 3 and all(p.endswith(synth.SUFFIXES[fmt]) for p in paths)
    want = [d for i in range(3) for d in synth.generate_shard(spec, i)]
    if fmt == "jsonl":
        got = [json.loads(line) for p in paths for line in gzip.open(p, "rt")]
    elif fmt == "csv":
        got = [
            {**row, "labels": row["labels"].split(",")}
            for p in paths
            for row in csv.DictReader(gzip.open(p, "rt", newline=""))
        ]
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        got = [row for p in paths for row in pq.read_table(p).to_pylist()]
    else:
        import tensorflow as tf

        got = []
        for p in paths:
            for raw in tf.data.TFRecordDataset(p, compression_type="GZIP"):
                f = tf.train.Example.FromString(raw.numpy()).features.feature
                row = {k: [v.decode() for v in f[k].bytes_list.value] for k in f}
                got.append({k: (v if k == "labels" else v[0]) for k, v in row.items()})
    assert got == want
    manifest = json.load(open(tmp_path / "corpus.json"))
    assert manifest["spec"]["documents"] == 120 and manifest["format"] == fmt


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="synth mean_labels"):
        synth.SynthSpec(mean_labels=0.5).validate()
    with pytest.raises(ValueError, match="synth format"):
        synth.write_corpus(synth.SynthSpec(documents=1), "/tmp/unused", "xml")


def test_cli_synth(tmp_path):
    from doctags.cli import main

    out = tmp_path / "c"
    assert main(["synth", "--out", str(out), "--documents", "30", "--labels", "20"]) == 0
    lines = [json.loads(x) for x in gzip.open(out / "corpus-00000-of-00001.jsonl.gz", "rt")]
    assert len(lines) == 30
    assert {label for d in lines for label in d["labels"]} <= {f"topic-{i:02d}" for i in range(20)}
