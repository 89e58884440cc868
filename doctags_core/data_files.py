"""The preprocess outputs as every later stage reads them.

The Beam job writes one directory per dataset (`doctags_core.schema` names
its files): TFRecord shards per split, the token and label vocabularies,
their counts and ``metadata.json``. Training, export, evaluation and the
benchmarks read them only through this module, so a file's format and the
"run preprocess first" message live in one place. Everything goes through
``tf.io.gfile``: local disk and ``gs://`` alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

from doctags_core import schema
from doctags_core.iterator_release import iterate_and_release
from doctags_core.splits import SPLITS


class DataError(ValueError):
    """A dataset folder that must not be trained on; the message says why and what to do."""


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


def read_report(data_dir: str) -> dict | None:
    """``report.json``, the data report of the run (None for a dataset without one)."""
    path = os.path.join(data_dir, schema.REPORT_FILE)
    if not _gfile().exists(path):
        return None
    with _gfile().GFile(path) as f:
        return json.load(f)


def _digest(path: str) -> str:
    with _gfile().GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _foreign_shards(data_dir: str, metadata: dict, splits) -> list[str]:
    """Problems with the split folders: shards of another run, or missing ones."""
    run_id = metadata["run_id"]
    problems = []
    for split in splits:
        shards = sorted(_gfile().glob(schema.split_pattern(data_dir, split)))
        foreign = [p for p in shards if schema.shard_run_id(p) != run_id]
        if foreign:
            names = ", ".join(os.path.basename(p) for p in foreign[:3])
            problems.append(f"{split}/ holds {len(foreign)} shard(s) of another run ({names})")
        own = len(shards) - len(foreign)
        expected = metadata.get("files_written", {}).get(split)
        if expected is not None and own != expected:
            problems.append(
                f"{split}/ has {own} shard(s) of this run, metadata.json says {expected}"
            )
    return problems


def check_dataset(data_dir: str, splits=SPLITS) -> dict:
    """Checks that every file of a dataset folder belongs to its metadata.json.

    The Beam job writes a run id into metadata.json and into every shard's
    name, and the SHA-256 of the vocabularies and label files into
    metadata.json; a folder that mixes runs (a run killed while its files
    were being moved into place, files copied in by hand) would otherwise
    train on one run's shards with another's label list.

    Args:
        data_dir: The preprocess output folder.
        splits: The split folders checked shard by shard: the ones the caller
            reads (training never reads test, and needs no test shards).

    Returns:
        The metadata.

    Raises:
        FileNotFoundError: no metadata.json (no finished preprocess run).
        DataError: files of another run, a missing or changed file, or an
            empty label vocabulary.
    """
    metadata = read_metadata(data_dir)
    again = "; run doctags preprocess again"
    if not metadata.get("run_id"):
        raise DataError(
            f"{data_dir}: metadata.json has no run id (an older doctags wrote it){again}"
        )
    problems = _foreign_shards(data_dir, metadata, splits)
    for name, digest in sorted(metadata.get("files", {}).items()):
        path = os.path.join(data_dir, name)
        if not _gfile().exists(path):
            problems.append(f"{name} is missing")
        elif _digest(path) != digest:
            problems.append(f"{name} is not the file of run {metadata['run_id']}")
    if problems:
        raise DataError(
            f"{data_dir} does not hold one complete preprocess run "
            f"(metadata.json: run {metadata['run_id']}): " + "; ".join(problems) + again
        )
    if not load_labels(data_dir):
        raise DataError(
            f"{data_dir}: the label vocabulary is empty (no train or validation document has a "
            f"label); see {os.path.join(data_dir, schema.REPORT_FILE)}"
        )
    return metadata


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
        DataError: when the split's records were written without their
            raw text (a split not in ``preprocess.raw_text_splits``).
    """
    import tensorflow as tf

    spec = schema.feature_spec(with_text=True)
    dataset = tf.data.TFRecordDataset(shard_files(data_dir, split), compression_type="GZIP")
    batches = dataset.batch(batch_size).map(lambda s: tf.io.parse_example(s, spec))
    for batch in iterate_and_release(batches):
        texts = [x.decode("utf-8") for x in batch[schema.TEXT].numpy()]
        if not all(texts):  # a document's raw text is never empty (missing_text)
            raise DataError(
                f"{data_dir}: the {split} records hold no raw text; preprocess again with "
                f"{split} in preprocess.raw_text_splits"
            )
        ids = [x.decode("utf-8") for x in batch[schema.ID].numpy()]
        labels = [[lb.decode("utf-8") for lb in row] for row in batch[schema.LABELS].to_list()]
        yield ids, texts, labels


def read_split(data_dir: str, split: str) -> tuple[list[str], list[str], list[list[str]]]:
    """``(ids, raw texts, label lists)`` of one whole split (`split_batches` joined).

    Raises:
        FileNotFoundError: when the split has no shard.
        DataError: when the split's records were written without their
            raw text (a split not in ``preprocess.raw_text_splits``).
    """
    ids, texts, labels = [], [], []
    for batch_ids, batch_texts, batch_labels in split_batches(data_dir, split):
        ids += batch_ids
        texts += batch_texts
        labels += batch_labels
    return ids, texts, labels
