"""Export ONE end-to-end SavedModel: raw strings in, scores and tag names out.

The serving graph is: shared TF cleaning -> whitespace split -> the same
TextVectorization as training -> the trained network -> threshold -> tag
names. Loading it needs TensorFlow only (no doctags code, no
tensorflow-text), so TF Serving, a notebook or `doctags serve` can all use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from doctags_core import schema
from doctags_core.cleaning import clean_text
from doctags_core.config import Config
from trainer import data as data_lib
from trainer.train import MODEL_FILE, THRESHOLDS_FILE

SIGNATURE = "serving_default"
TOKENIZE_SIGNATURE = "tokenize"
INPUT_NAME = "text"


class TaggerModule(tf.Module):
    """The exported object: cleaning, vectorizing, scoring and tagging."""

    def __init__(self, model, vocabulary, labels, thresholds, cfg: Config, assets: list[str]):
        super().__init__(name="doctags")
        self.model = model
        self.vectorizer = data_lib.make_vectorizer(vocabulary, cfg.model.sequence_length)
        self.label_names = tf.constant(labels, dtype=tf.string)
        self.thresholds = tf.constant(thresholds, dtype=tf.float32)
        self.asset_files = [tf.saved_model.Asset(path) for path in assets]
        self._steps = tuple(cfg.cleaning.steps)

    def _token_ids(self, text):
        cleaned = clean_text(text, self._steps)
        return cleaned, self.vectorizer(cleaned)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, text):
        """Per-label ``scores`` plus ``tags``/``tag_scores`` sorted by score.

        ``tags`` is padded with "" (and ``tag_scores`` with 0) to the largest
        number of tags in the batch, so every output is a dense tensor that
        TF Serving's REST and gRPC APIs can return.
        """
        _, ids = self._token_ids(text)
        scores = tf.cast(self.model(ids, training=False), tf.float32)
        order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
        sorted_scores = tf.gather(scores, order, batch_dims=1)
        keep = sorted_scores >= tf.gather(self.thresholds, order)
        tags = tf.ragged.boolean_mask(tf.gather(self.label_names, order), keep)
        tag_scores = tf.ragged.boolean_mask(sorted_scores, keep)
        return {
            "scores": scores,
            "tags": tags.to_tensor(default_value=""),
            "tag_scores": tag_scores.to_tensor(default_value=0.0),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def tokenize(self, text):
        """The cleaned text and token ids the model sees (for skew checks)."""
        cleaned, ids = self._token_ids(text)
        return {"cleaned": cleaned, "token_ids": ids}


def export_model(cfg: Config, overwrite: bool = False) -> str:
    """Writes the SavedModel to ``cfg.export_dir`` and returns that path.

    The version directory is written under a temporary name and renamed into
    place, so a server watching the base path never sees half a model.

    Raises:
        FileExistsError: if the version exists and ``overwrite`` is False.
    """
    import json

    target = cfg.export_dir
    if tf.io.gfile.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; raise export.version or pass --overwrite")
    model = keras.models.load_model(os.path.join(cfg.model_dir, MODEL_FILE))
    vocabulary = data_lib.load_vocabulary(cfg.data_dir)
    labels = data_lib.load_labels(cfg.data_dir)
    with tf.io.gfile.GFile(os.path.join(cfg.model_dir, THRESHOLDS_FILE)) as f:
        threshold = float(json.load(f)["threshold"])
    assets = [
        os.path.join(cfg.data_dir, schema.LABELS_FILE),
        os.path.join(cfg.data_dir, schema.VOCAB_FILE),
        os.path.join(cfg.model_dir, THRESHOLDS_FILE),
        os.path.join(cfg.model_dir, "config.yaml"),
    ]
    module = TaggerModule(model, vocabulary, labels, [threshold] * len(labels), cfg, assets)
    parent = os.path.dirname(target)
    tf.io.gfile.makedirs(parent)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                SIGNATURE: module.serve,
                TOKENIZE_SIGNATURE: module.tokenize,
            },
        )
        if tf.io.gfile.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return target
