"""The preprocess outputs as every later stage reads them.

The Beam job writes one directory per dataset (`doctags_core.schema` names
its files): TFRecord shards per split, the token and label vocabularies,
their counts and ``metadata.json``. Training, export, evaluation and the
benchmarks read them only through this module, so a file's format and the
"run preprocess first" message live in one place. Everything goes through
``tf.io.gfile``: local disk and ``gs://`` alike.
"""

from __future__ import annotations

import json
import math
import os

from doctags_core import schema


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_lines(path: str) -> list[str]:
    """A one-name-per-line file written by the Beam job, blank lines skipped."""
    with _gfile().GFile(path, "r") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def load_vocabulary(data_dir: str) -> list[str]:
    """The token vocabulary (most frequent first)."""
    return read_lines(os.path.join(data_dir, schema.VOCAB_FILE))


def load_labels(data_dir: str) -> list[str]:
    """The label vocabulary; its order fixes the model's output columns."""
    return read_lines(os.path.join(data_dir, schema.LABELS_FILE))


def read_metadata(data_dir: str) -> dict:
    """``metadata.json``: counts, dead letters, statistics and the config used.

    Raises:
        FileNotFoundError: when the directory holds no finished preprocess run.
    """
    path = os.path.join(data_dir, schema.METADATA_FILE)
    if not _gfile().exists(path):
        raise FileNotFoundError(f"{path} is missing; run preprocess first")
    with _gfile().GFile(path) as f:
        return json.load(f)


def load_label_counts(data_dir: str, labels: list[str]) -> tuple[list[int], int]:
    """Train documents per label (in ``labels`` order) and train documents in all."""
    metadata = read_metadata(data_dir)
    counts = metadata["label_counts"]
    per_label = [counts.get(label, {}).get("train", 0) for label in labels]
    return per_label, metadata["documents"]["train"]


def train_label_counts(data_dir: str) -> dict[str, int]:
    """``{label: train documents}`` of every label the metadata knows (empty if none)."""
    try:
        counts = read_metadata(data_dir).get("label_counts", {})
    except FileNotFoundError:
        return {}
    return {label: c.get("train", 0) for label, c in counts.items()}


def read_vocab_counts(data_dir: str) -> list[tuple[str, int, int]]:
    """``(token, count, document_count)`` rows of ``vocab_counts.tsv``."""
    rows = []
    with _gfile().GFile(os.path.join(data_dir, schema.VOCAB_COUNTS_FILE)) as f:
        next(f)  # header
        for line in f:
            token, count, document_count = line.rstrip("\n").split("\t")
            rows.append((token, int(count), int(document_count)))
    return rows


def load_idf_weights(data_dir: str, vocabulary: list[str]) -> list[float]:
    """IDF of each vocabulary token from the Beam job's train document counts.

    Uses the formula Keras' own ``adapt()`` would, ``log(1 + N / (1 + df))``,
    but from counts computed by the distributed combine, never by a pass over
    the corpus here.
    """
    n_docs = read_metadata(data_dir)["documents"]["train"]
    document_counts = {token: df for token, _, df in read_vocab_counts(data_dir)}
    return [math.log(1 + n_docs / (1 + document_counts.get(t, 0))) for t in vocabulary]


def files_matching(pattern: str) -> list[str]:
    """The TFRecord shards matching ``pattern``, sorted (local or remote).

    Raises:
        FileNotFoundError: when the pattern matches no shard.
    """
    files = _gfile().glob(pattern)
    if not files:
        raise FileNotFoundError(f"no TFRecord shard matches {pattern}; run preprocess first")
    return sorted(files)


def shard_files(data_dir: str, split: str) -> list[str]:
    """The TFRecord shards of one split, sorted.

    Raises:
        FileNotFoundError: when the split has no shard.
    """
    return files_matching(schema.split_pattern(data_dir, split))


def split_batches(data_dir: str, split: str, batch_size: int = 1024):
    """``(ids, raw texts, label lists)`` of one split, one batch at a time.

    Streams the shards, so a consumer that does not keep the texts (batch
    evaluation) holds one batch of them, whatever the split's size.

    Raises:
        FileNotFoundError: when the split has no shard.
        ValueError: when the records were written without their raw text
            (``preprocess.keep_raw_text: false``).
    """
    import tensorflow as tf

    spec = schema.feature_spec(with_text=True)
    dataset = tf.data.TFRecordDataset(shard_files(data_dir, split), compression_type="GZIP")
    for batch in dataset.batch(batch_size).map(lambda s: tf.io.parse_example(s, spec)):
        texts = [x.decode("utf-8") for x in batch[schema.TEXT].numpy()]
        if texts and not any(texts):
            raise ValueError(f"{data_dir}: the records hold no raw text (preprocess.keep_raw_text)")
        ids = [x.decode("utf-8") for x in batch[schema.ID].numpy()]
        labels = [[lb.decode("utf-8") for lb in row] for row in batch[schema.LABELS].to_list()]
        yield ids, texts, labels


def read_split(data_dir: str, split: str) -> tuple[list[str], list[str], list[list[str]]]:
    """``(ids, raw texts, label lists)`` of one whole split (`split_batches` joined).

    Raises:
        FileNotFoundError: when the split has no shard.
        ValueError: when the records were written without their raw text
            (``preprocess.keep_raw_text: false``).
    """
    ids, texts, labels = [], [], []
    for batch_ids, batch_texts, batch_labels in split_batches(data_dir, split):
        ids += batch_ids
        texts += batch_texts
        labels += batch_labels
    return ids, texts, labels
