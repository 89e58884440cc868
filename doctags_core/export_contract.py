"""The export contract: what a doctags SavedModel looks like to everything that reads it.

The trainer writes the export; `doctags serve`, the clients, batch tagging
and evaluation read it, and so does TensorFlow Serving. Every name they
share is defined here once: the signatures and their input and output
names, the asset and ``assets.extra`` files, the version folders, and how
the padded ``tags``/``tag_scores`` outputs decode into ``(tag, score)``
pairs. No TensorFlow at import time: the REST client uses this module too.
"""

from __future__ import annotations

import os

# The TensorFlow Serving release the export must run in: its op set
# (serving/tf_serving_<major>_<minor>_ops.txt), the session-loader check
# that `.ci/run` runs under the matching TensorFlow, and the k8s image tag
# (k8s/serving/deployment.yaml) all follow this one value.
TF_SERVING_VERSION = "2.20.0"

SERVE_TAG = "serve"  # the meta graph TF Serving loads
SIGNATURE = "serving_default"
TOKENIZE_SIGNATURE = "tokenize"
INPUT_NAME = "text"
OUTPUT_NAMES = ("scores", "tags", "tag_scores")
TOKENIZE_OUTPUT_NAMES = ("cleaned", "token_ids")

ASSETS_DIR = "assets"
LABELS_ASSET = "labels.txt"
THRESHOLDS_ASSET = "thresholds.json"
CONFIG_ASSET = "config.yaml"
EXTRA_DIR = "assets.extra"  # TF Serving's fixed name, not tracked by the SavedModel
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's fixed name
METADATA_FILE = "model_metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"


def tf_serving_minor() -> str:
    """``"2.20"`` for TF Serving 2.20.x: the pip pin of its TensorFlow runtime."""
    return ".".join(TF_SERVING_VERSION.split(".")[:2])


def warmup_path(version_dir: str) -> str:
    """The warmup records TF Serving replays before a version goes live."""
    return os.path.join(version_dir, EXTRA_DIR, WARMUP_FILE)


def asset_path(version_dir: str, name: str) -> str:
    """A file the export carries in ``assets/`` (labels, thresholds, config)."""
    return os.path.join(version_dir, ASSETS_DIR, name)


def _gfile():
    import tensorflow as tf  # gfile: local disk and gs:// alike

    return tf.io.gfile


def list_versions(base_path: str) -> dict[int, str]:
    """``{version: directory}`` of the numbered folders holding a SavedModel.

    TF Serving's rule: only all-digit names count, so a staging folder
    (``.export-*``) or a copy in progress without ``saved_model.pb`` is
    never mistaken for a version.
    """
    gfile = _gfile()
    if not gfile.isdir(base_path):
        return {}
    found = {}
    for name in gfile.listdir(base_path):
        name = name.rstrip("/")
        path = os.path.join(base_path, name)
        if name.isdigit() and gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
            found[int(name)] = path
    return found


def resolve_version_dir(path: str) -> str:
    """A version directory as given, or the highest version under a base path.

    Raises:
        FileNotFoundError: when neither holds a SavedModel.
    """
    if _gfile().exists(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    versions = list_versions(path)
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel here nor in a numbered version directory")
    return versions[max(versions)]


def read_labels(version_dir: str) -> list[str]:
    """The export's label names, in the order of its ``scores`` columns."""
    with _gfile().GFile(asset_path(version_dir, LABELS_ASSET)) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def decode_tags(tags, tag_scores) -> list[list[tuple[str, float]]]:
    """``(tag, score)`` pairs per text from the padded outputs, padding dropped.

    ``tags`` rows are padded with ``""`` (bytes from TensorFlow, text from
    JSON), ``tag_scores`` with 0; the tags are already sorted best first.
    """
    rows = []
    for row_tags, row_scores in zip(tags, tag_scores):
        row = []
        for tag, score in zip(row_tags, row_scores):
            tag = tag.decode("utf-8") if isinstance(tag, bytes) else str(tag)
            if tag:
                row.append((tag, float(score)))
        rows.append(row)
    return rows
