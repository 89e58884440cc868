"""A synthetic multi-label corpus generator for scale tests and benchmarks.

Real corpora of millions of labelled documents cannot ship with the repo, so
the scale work (bounded memory, throughput, input pipeline) runs on text made
here. It is shaped like real text where it matters to the job:

* a Zipfian vocabulary whose head is English stop words, sprinkled with the
  noise the cleaning steps exist for (numbers, HTML tags and entities, URLs,
  contractions), so cleaning and counting do their real amount of work;
* a long-tailed (Zipfian) label distribution over ``labels`` labels and a
  realistic number of labels per document (1 + Poisson, capped);
* label-dependent words: each label owns a small set of topic words and a
  share of each document's tokens is drawn from its labels' sets, so a model
  can learn the labels from the text;
* optional exact duplicates (same text, other id, changed case and spacing),
  to exercise duplicate removal.

Everything is drawn with numpy, vectorised per shard, and shard ``i`` depends
only on ``(seed, i)``: the output is identical for any number of worker
processes. Formats: JSONL (gzip), CSV (gzip or not), Parquet and TFRecord of
``tf.train.Example`` with the same fields.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from doctags_core.stopwords import ENGLISH_STOP_WORDS

FORMATS = ("jsonl", "csv", "parquet", "tfrecord")
SUFFIXES = {
    "jsonl": ".jsonl.gz",
    "csv": ".csv.gz",
    "parquet": ".parquet",
    "tfrecord": ".tfrecord.gz",
}

# English stop words in rough frequency order: the head of the distribution.
_HEAD = (
    "the of and to a in is that for it as was with be by on not he this are or his from at "
    "which but have an had they you were their all we can her has there been if more when "
    "will would who so no she other its our into than them only some could these then two "
    "do may out up about over after what most also any very should such those through"
).split()
# Tokens the cleaning removes or rewrites; they sit among frequent ranks.
_NOISE = (
    "1987",
    "3.5",
    "12",
    "$4.2",
    "mln",
    "<b>",
    "</b>",
    "&amp;",
    "<br/>",
    "don't",
    "it's",
    "can't",
    "won't",
    "they're",
    "we'll",
    "http://www.example.com/news",
    "www.reuters.com",
    "&lt;ab&gt;",
    "&quot;",
    "2,500",
    "Q3",
    "10%",
    "<p>",
    "</p>",
    "i'm",
    "you've",
)
_ONSETS = (
    "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr st tr ch sh th bl cl gl sl sp"
).split()
_VOWELS = "a e i o u ai ea ie ou oa".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "rt", "st", "ck", "ng"]


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; every field has a sensible default.

    Attributes:
        documents: Number of documents.
        labels: Number of distinct labels.
        vocabulary: Number of distinct word types (before cleaning).
        mean_words: Mean document length in words (log-normal lengths).
        mean_labels: Mean labels per document (1 + Poisson, capped).
        max_labels: Cap on labels per document.
        label_exponent: Zipf exponent of label frequencies (long tail).
        word_exponent: Zipf exponent of the background word distribution.
        topic_words: Words owned by each label.
        topic_share: Share of a document's words drawn from its labels' words.
        title_words: Mean title length in words (0: no title field).
        duplicate_fraction: Share of documents that repeat an earlier
            document's text (new id, changed case and spacing).
        documents_per_shard: Documents per output file.
        seed: Everything is a function of this seed.
    """

    documents: int = 10_000
    labels: int = 500
    vocabulary: int = 50_000
    mean_words: int = 200
    mean_labels: float = 1.6
    max_labels: int = 8
    label_exponent: float = 1.1
    word_exponent: float = 1.05
    topic_words: int = 40
    topic_share: float = 0.25
    title_words: int = 8
    duplicate_fraction: float = 0.0
    documents_per_shard: int = 50_000
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        checks = [
            (self.documents >= 1, "documents", "must be at least 1"),
            (self.labels >= 1, "labels", "must be at least 1"),
            (self.vocabulary >= 200, "vocabulary", "must be at least 200"),
            (self.mean_words >= 1, "mean_words", "must be at least 1"),
            (1 <= self.mean_labels <= self.max_labels, "mean_labels", "must be in [1, max_labels]"),
            (1 <= self.max_labels <= self.labels, "max_labels", "must be in [1, labels]"),
            (self.topic_words >= 1, "topic_words", "must be at least 1"),
            (0 <= self.topic_share <= 1, "topic_share", "must be in [0, 1]"),
            (self.title_words >= 0, "title_words", "must be >= 0"),
            (0 <= self.duplicate_fraction < 1, "duplicate_fraction", "must be in [0, 1)"),
            (self.documents_per_shard >= 1, "documents_per_shard", "must be at least 1"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"synth {name}: {message}")

    @property
    def num_shards(self) -> int:
        """Number of output files."""
        return math.ceil(self.documents / self.documents_per_shard)


@dataclass(frozen=True)
class _Model:
    """The corpus' fixed parameters, derived from the seed alone."""

    words: np.ndarray  # object array of str, index = frequency rank
    word_table: np.ndarray
    label_names: list[str]
    label_table: np.ndarray
    topic: np.ndarray  # [labels, topic_words] word indices
    topic_table: np.ndarray


_TABLE_BITS = 22


def _zipf_table(n: int, exponent: float, offset: float = 2.7) -> np.ndarray:
    """An inverse-CDF lookup table: ``table[uniform int]`` is a Zipf-distributed rank.

    A gather from a 4M-entry table is several times faster than
    ``searchsorted`` on the CDF, and the quantisation (2**-22) is far below
    the probability of any rank that matters here.
    """
    weights = 1.0 / np.power(np.arange(n) + offset, exponent)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    grid = (np.arange(1 << _TABLE_BITS) + 0.5) / (1 << _TABLE_BITS)
    return np.minimum(np.searchsorted(cdf, grid, side="right"), n - 1).astype(np.int32)


def _sample(rng: np.random.Generator, table: np.ndarray, size) -> np.ndarray:
    return table[rng.integers(0, len(table), size=size)]


def _pseudo_words(rng: np.random.Generator, n: int, exclude: set[str]) -> list[str]:
    """``n`` distinct pronounceable lowercase words, shortest first."""
    words: dict[str, None] = {}
    while len(words) < n:
        m = 2 * (n - len(words)) + 100
        syllables = rng.integers(1, 5, size=m)
        onset = rng.integers(0, len(_ONSETS), size=(m, 4))
        vowel = rng.integers(0, len(_VOWELS), size=(m, 4))
        coda = rng.integers(0, len(_CODAS), size=(m, 4))
        for i in range(m):
            w = "".join(
                _ONSETS[onset[i, j]] + _VOWELS[vowel[i, j]] + _CODAS[coda[i, j]]
                for j in range(syllables[i])
            )
            if w not in exclude:
                words.setdefault(w)
    # Zipf's law of abbreviation: frequent words are short.
    return sorted(list(words)[:n], key=len)


def _build_model(spec: SynthSpec) -> _Model:
    rng = np.random.default_rng([spec.seed, 0x5EED])
    head = [w for w in _HEAD if w in set(ENGLISH_STOP_WORDS)]
    body = _pseudo_words(rng, spec.vocabulary - len(head) - len(_NOISE), set(ENGLISH_STOP_WORDS))
    words = head + body
    # Noise tokens are frequent but not the most frequent: ranks 60..~560.
    for i, token in enumerate(_NOISE):
        words.insert(60 + 20 * i, token)
    width = len(str(spec.labels - 1))
    label_names = [f"topic-{i:0{width}d}" for i in range(spec.labels)]
    # Topic words come from the pseudo-word ranks (not stop words or noise),
    # mid-frequency, so they survive cleaning and land in the vocabulary.
    lo = len(head) + len(_NOISE) + 100
    hi = min(len(words), lo + max(20 * spec.labels, 5000))
    pool = np.array([i for i in range(lo, hi) if words[i] not in _NOISE])
    topic = rng.choice(pool, size=(spec.labels, spec.topic_words), replace=True)
    return _Model(
        words=np.array(words, dtype=object),
        word_table=_zipf_table(len(words), spec.word_exponent),
        label_names=label_names,
        label_table=_zipf_table(spec.labels, spec.label_exponent, offset=1.0),
        topic=topic,
        topic_table=_zipf_table(spec.topic_words, 1.0),
    )


def _draw_labels(rng, model: _Model, spec: SynthSpec, n: int):
    """Per document: how many labels, and which (drawn by frequency, no repeats).

    Candidates are drawn with replacement and the first ``count`` distinct
    ones are kept (successive sampling without replacement). Returns the
    counts and an ``[n, max_labels]`` matrix whose first ``count`` columns
    hold each document's labels.
    """
    k = spec.max_labels
    counts = np.minimum(1 + rng.poisson(spec.mean_labels - 1, size=n), k)
    width = min(4 * k, 64)
    cand = _sample(rng, model.label_table, (n, width))
    fresh = np.ones((n, width), dtype=bool)
    for j in range(1, width):
        fresh[:, j] = ~(cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
    rank = np.cumsum(fresh, axis=1)
    counts = np.minimum(counts, rank[:, -1])  # a row short of distinct labels keeps fewer
    keep = fresh & (rank <= counts[:, None])
    out = np.zeros((n, k), dtype=np.int64)
    rows, cols = np.nonzero(keep)
    out[rows, rank[rows, cols] - 1] = cand[rows, cols]
    return counts, out


def _draw_tokens(rng, model: _Model, lengths, counts, doc_labels, share: float) -> np.ndarray:
    """Word indices for all documents of a shard, concatenated."""
    total = int(lengths.sum())
    doc = np.repeat(np.arange(len(lengths)), lengths)
    background = _sample(rng, model.word_table, total)
    which = (rng.random(total) * counts[doc]).astype(np.int64)
    labels = doc_labels[doc, which]
    topical = model.topic[labels, _sample(rng, model.topic_table, total)]
    return np.where(rng.random(total) < share, topical, background)


def _lengths(rng, mean: int, n: int, sigma: float = 0.5) -> np.ndarray:
    mu = math.log(mean) - sigma * sigma / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, size=n)), 5, 10 * mean).astype(np.int64)


def _join(words: list[str], lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [" ".join(words[a:b]) for a, b in zip(starts, ends)]


def generate_shard(spec: SynthSpec, shard: int, model: _Model | None = None) -> list[dict]:
    """The documents of one shard as dicts (``id``, ``title``, ``text``, ``labels``)."""
    model = model or _build_model(spec)
    first = shard * spec.documents_per_shard
    n = min(spec.documents_per_shard, spec.documents - first)
    rng = np.random.default_rng([spec.seed, shard])
    counts, doc_labels = _draw_labels(rng, model, spec, n)
    lengths = _lengths(rng, spec.mean_words, n)
    body = model.words[_draw_tokens(rng, model, lengths, counts, doc_labels, spec.topic_share)]
    texts = _join(body.tolist(), lengths)
    titles = None
    if spec.title_words:
        t_len = _lengths(rng, spec.title_words, n, sigma=0.3)
        words = model.words[_draw_tokens(rng, model, t_len, counts, doc_labels, 0.6)]
        titles = _join(words.tolist(), t_len)
    html = rng.random(n) < 0.1  # some documents arrive as HTML paragraphs
    dup_of = np.where(
        rng.random(n) < spec.duplicate_fraction,
        (rng.random(n) * np.arange(n)).astype(np.int64),
        -1,
    )
    dup_of[0] = -1
    names = model.label_names
    docs = []
    for i in range(n):
        if dup_of[i] >= 0:  # same words, other case and spacing: a normalised-text duplicate
            src = docs[dup_of[i]]
            text = "  " + src["text"].upper().replace(" ", "   ") + "\n"
            labels, title = src["labels"], src.get("title")
        else:
            text = texts[i][:1].upper() + texts[i][1:] + "."
            if html[i]:
                text = f"<p>{text}</p>"
            labels = [names[j] for j in doc_labels[i, : counts[i]].tolist()]
            title = titles[i][:1].upper() + titles[i][1:] if titles is not None else None
        doc = {"id": f"doc-{first + i:09d}"}
        if title is not None:
            doc["title"] = title
        doc["text"] = text
        doc["labels"] = labels
        docs.append(doc)
    return docs


def shard_path(out_dir: str, fmt: str, shard: int, num_shards: int) -> str:
    """The file name of one shard."""
    return os.path.join(out_dir, f"corpus-{shard:05d}-of-{num_shards:05d}{SUFFIXES[fmt]}")


def _write_jsonl(path: str, docs: list[dict], level: int) -> None:
    with gzip.open(path, "wb", compresslevel=level) as f:
        f.write("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8"))


def _write_csv(path: str, docs: list[dict], level: int) -> None:
    buf = io.StringIO()
    fields = [k for k in ("id", "title", "text", "labels") if k in docs[0]]
    writer = csv.writer(buf)
    writer.writerow(fields)
    for d in docs:
        writer.writerow([",".join(d[k]) if k == "labels" else d[k] for k in fields])
    with gzip.open(path, "wb", compresslevel=level) as f:
        f.write(buf.getvalue().encode("utf-8"))


def _write_parquet(path: str, docs: list[dict], level: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {k: [d[k] for d in docs] for k in docs[0]}
    pq.write_table(pa.table(columns), path, row_group_size=10_000, compression="snappy")


def _write_tfrecord(path: str, docs: list[dict], level: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def feature(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for d in docs:
            features = {
                k: feature([x.encode() for x in v] if isinstance(v, list) else [v.encode()])
                for k, v in d.items()
            }
            w.write(
                tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
            )


_WRITERS = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
    "tfrecord": _write_tfrecord,
}


def _make_shard(args) -> str:
    spec, out_dir, fmt, shard, level = args
    path = shard_path(out_dir, fmt, shard, spec.num_shards)
    tmp = path + ".tmp"
    _WRITERS[fmt](tmp, generate_shard(spec, shard, _model_for(spec)), level)
    os.replace(tmp, path)  # a killed run never leaves a truncated shard behind
    return path


_MODEL_CACHE: dict = {}


def _model_for(spec: SynthSpec) -> _Model:
    key = dataclasses.replace(spec, documents=0, documents_per_shard=1, duplicate_fraction=0.0)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = _build_model(spec)
    return _MODEL_CACHE[key]


def write_corpus(
    spec: SynthSpec, out_dir: str, fmt: str = "jsonl", workers: int = 1, compresslevel: int = 1
) -> list[str]:
    """Generates the corpus into ``out_dir`` and returns the shard paths.

    Also writes ``corpus.json`` (the spec and the label names, most frequent
    first by construction) next to the shards.

    Args:
        spec: What to generate.
        out_dir: Created if missing.
        fmt: One of `FORMATS`.
        workers: Processes generating shards in parallel (output identical).
        compresslevel: gzip level for JSONL/CSV (1 = fast; the job reads it).
    """
    spec.validate()
    if fmt not in FORMATS:
        raise ValueError(f"synth format: must be one of {FORMATS}, got {fmt!r}")
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(spec, out_dir, fmt, i, compresslevel) for i in range(spec.num_shards)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            paths = list(pool.map(_make_shard, jobs))
    else:
        paths = [_make_shard(job) for job in jobs]
    manifest = {"spec": dataclasses.asdict(spec), "format": fmt, "shards": len(paths)}
    with open(os.path.join(out_dir, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return paths
