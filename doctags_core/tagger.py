"""Tag raw text with an exported model, run exactly as TF Serving runs it.

Evaluation, `doctags predict`, batch tagging and the benchmarks all score
the artifact that is deployed: the SavedModel, through TF Serving's
session-based loader (`doctags_core.session_model`), cleaning and
thresholds included. Nothing from the training code is needed: everything
the model uses is inside the SavedModel.
"""

from __future__ import annotations

import numpy as np

from doctags_core import export_contract as contract
from doctags_core.labels import LABEL_DTYPE
from doctags_core.session_model import SessionModel


class Tagger:
    """An exported model, ready to tag batches of raw strings.

    Args:
        path: A version directory, or a model base path (its highest version).

    Attributes:
        path: The version directory in use.
        labels: Label names in the order of the ``scores`` columns.
    """

    def __init__(self, path: str):
        self.path = contract.resolve_version_dir(path)
        self._session = SessionModel(self.path)
        self.labels = contract.read_labels(self.path)

    def _run(self, signature: str, texts) -> dict[str, np.ndarray]:
        batch = np.array([t.encode("utf-8") if isinstance(t, str) else t for t in texts], object)
        return self._session.run(signature, {contract.INPUT_NAME: batch.reshape(-1)})

    def raw(self, texts) -> dict[str, np.ndarray]:
        """The serving signature's outputs (scores, tags, tag_scores) as numpy arrays."""
        return self._run(contract.SIGNATURE, texts)

    def tokenize(self, texts) -> dict[str, np.ndarray]:
        """The cleaned text and token ids the model sees (the ``tokenize`` signature)."""
        return self._run(contract.TOKENIZE_SIGNATURE, texts)

    def predict(self, texts, batch_size: int = 256) -> list[list[tuple[str, float]]]:
        """Tags of each text, best first, as ``(tag, score)`` pairs."""
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(texts), batch_size):
            out = self.raw(texts[start : start + batch_size])
            results += contract.decode_tags(out["tags"], out["tag_scores"])
        return results

    def predict_multi_hot(self, texts, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(decisions, scores)`` matrices over `labels`, with the in-graph thresholds."""
        index = {name: i for i, name in enumerate(self.labels)}
        decisions, scores = [], []
        for start in range(0, len(texts), batch_size):
            out = self.raw(texts[start : start + batch_size])
            batch = np.zeros(out["scores"].shape, dtype=LABEL_DTYPE)
            for row, tags in enumerate(out["tags"]):
                for tag in tags:
                    if tag:  # "" pads the rows to the batch's most tags
                        batch[row, index[tag.decode("utf-8")]] = 1
            decisions.append(batch)
            scores.append(out["scores"])
        if not decisions:
            empty = np.zeros((0, len(self.labels)))
            return empty.astype(LABEL_DTYPE), empty.astype(np.float32)
        return np.concatenate(decisions), np.concatenate(scores)

    def close(self) -> None:
        """Frees the model's session."""
        self._session.close()
