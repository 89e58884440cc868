"""Load an exported doctags SavedModel and tag raw text, with TensorFlow only.

Nothing from the training code is imported: what the model needs (cleaning,
vocabulary, label names, threshold) is inside the SavedModel.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

SIGNATURE = "serving_default"
LABELS_ASSET = "labels.txt"


def load_saved_model(path: str, **kwargs):
    """``tf.saved_model.load``, registering tensorflow-text ops only if needed.

    A word-level export uses core TF ops only and loads with TensorFlow
    alone. A WordPiece export uses tensorflow-text's tokenizer op, which TF
    Serving links; here the op library is imported on demand, then loading
    is retried.
    """
    try:
        return tf.saved_model.load(path, **kwargs)
    except (tf.errors.NotFoundError, ValueError) as e:
        if "not registered" not in str(e) and "Op type" not in str(e):
            raise
        import tensorflow_text  # noqa: F401  (registers the ops)

        return tf.saved_model.load(path, **kwargs)


def resolve_version_dir(path: str) -> str:
    """Accepts a version directory or a model base path (highest version wins)."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        int(name.rstrip("/"))
        for name in (tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else [])
        if name.rstrip("/").isdigit()
        and tf.io.gfile.exists(os.path.join(path, name.rstrip("/"), "saved_model.pb"))
    ]
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel here nor in a numbered version directory")
    return os.path.join(path, str(max(versions)))


class Tagger:
    """An exported model, ready to tag batches of raw strings."""

    def __init__(self, path: str):
        self.path = resolve_version_dir(path)
        self._loaded = load_saved_model(self.path)
        self._serve = self._loaded.signatures[SIGNATURE]
        with tf.io.gfile.GFile(os.path.join(self.path, "assets", LABELS_ASSET)) as f:
            self.labels = [line.rstrip("\n") for line in f if line.strip()]

    def raw(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The signature's outputs (scores, tags, tag_scores) as numpy arrays."""
        out = self._serve(text=tf.constant(list(texts), dtype=tf.string))
        return {k: v.numpy() for k, v in out.items()}

    def predict(self, texts: list[str], batch_size: int = 256) -> list[list[tuple[str, float]]]:
        """Tags of each text, best first, as ``(tag, score)`` pairs."""
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(texts), batch_size):
            out = self.raw(texts[start : start + batch_size])
            for tags, scores in zip(out["tags"], out["tag_scores"]):
                results.append([(t.decode("utf-8"), float(s)) for t, s in zip(tags, scores) if t])
        return results

    def predict_multi_hot(self, texts: list[str], batch_size: int = 256):
        """``(decisions, scores)`` matrices over `labels`, with the in-graph threshold.

        Decisions are int32 (`doctags_core.labels.LABEL_DTYPE`, not imported:
        this module needs TensorFlow only): int8 indicators break
        scikit-learn with more than 127 labels.
        """
        index = {name: i for i, name in enumerate(self.labels)}
        decisions, scores = [], []
        for start in range(0, len(texts), batch_size):
            out = self.raw(texts[start : start + batch_size])
            batch = np.zeros((len(out["scores"]), len(self.labels)), dtype=np.int32)
            for row, tags in enumerate(out["tags"]):
                for tag in tags:
                    if tag:
                        batch[row, index[tag.decode("utf-8")]] = 1
            decisions.append(batch)
            scores.append(out["scores"])
        return np.concatenate(decisions), np.concatenate(scores)
