"""The record schema between the Beam job and the trainer/evaluator.

Each TFRecord holds one ``tf.train.Example`` per document. The Beam job
writes it in TF string ops, tested against the reference `make_example`;
tf.data reads it with `feature_spec`. Keeping the reference and the spec
here is what stops the writer and the reader from drifting apart.
"""

from __future__ import annotations

import os

ID = "id"
# The cleaned text: the document's tokens joined by single spaces. One string
# per document (not a list of tokens) because writing it costs a tenth of
# serializing a token list, and the trainer's TextVectorization splits it on
# whitespace with the same op that produced the Beam job's token counts.
CLEAN_TEXT = "clean_text"
LABELS = "labels"
TEXT = "text"

RECORD_SUFFIX = ".tfrecord.gz"
VOCAB_FILE = "vocab.txt"
VOCAB_COUNTS_FILE = "vocab_counts.tsv"
LABELS_FILE = "labels.txt"
LABEL_COUNTS_FILE = "label_counts.tsv"
METADATA_FILE = "metadata.json"
REPORT_FILE = "report.json"  # the data report (doctags_core.data_checks)
THRESHOLDS_FILE = "thresholds.json"  # written by the trainer, shipped in the export
DEAD_LETTER_DIR = "dead_letter"


def split_pattern(data_dir: str, split: str) -> str:
    """Glob of the TFRecord shards of one split."""
    return os.path.join(data_dir, split, f"part-*{RECORD_SUFFIX}")


def split_prefix(data_dir: str, split: str) -> str:
    """Shard-name prefix the Beam sink writes for one split."""
    return os.path.join(data_dir, split, "part")


def shard_path(data_dir: str, split: str, run_id: str, index: int, total: int) -> str:
    """``SPLIT/part-RUNID-00000-of-00002.tfrecord.gz``: a shard names the run that wrote it.

    The run id in every shard name is how a reader tells a dataset's own
    shards from strays of another run (`doctags_core.data_files.check_dataset`).
    """
    run = f"{run_id}-" if run_id else ""
    return f"{split_prefix(data_dir, split)}-{run}{index:05d}-of-{total:05d}{RECORD_SUFFIX}"


def shard_run_id(path: str) -> str | None:
    """The run id in a shard's file name (None for a name without one)."""
    name = os.path.basename(path)
    if not name.startswith("part-") or not name.endswith(RECORD_SUFFIX):
        return None
    parts = name[len("part-") : -len(RECORD_SUFFIX)].split("-")
    # RUNID-00000-of-00002: the last three parts are the shard numbering.
    if len(parts) <= 3:
        return None
    return "-".join(parts[:-3])


def feature_spec(with_text: bool = False) -> dict:
    """The parsing spec: id and cleaned text as strings, labels as a ragged tensor."""
    import tensorflow as tf

    spec = {
        ID: tf.io.FixedLenFeature([], tf.string),
        CLEAN_TEXT: tf.io.FixedLenFeature([], tf.string),
        LABELS: tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64),
    }
    if with_text:
        spec[TEXT] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def make_example(doc_id: str, tokens: list[bytes], labels: list[str], text: str | None) -> bytes:
    """Serializes one document as a ``tf.train.Example`` (the reference encoding).

    Args:
        doc_id: Document id.
        tokens: Cleaned tokens; stored joined by single spaces.
        labels: Label names.
        text: Raw text, or None to leave it out.
    """
    from tensorflow.core.example import example_pb2, feature_pb2

    def bytes_feature(values: list[bytes]) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=values))

    features = {
        ID: bytes_feature([doc_id.encode("utf-8")]),
        CLEAN_TEXT: bytes_feature([b" ".join(tokens)]),
        LABELS: bytes_feature([label.encode("utf-8") for label in labels]),
    }
    if text is not None:
        features[TEXT] = bytes_feature([text.encode("utf-8")])
    return example_pb2.Example(features=feature_pb2.Features(feature=features)).SerializeToString()
