"""The worker side of batch tagging: RunInference's model handler and the per-batch steps.

`serving.batch_tagging` builds the job; these are the pieces Beam workers
unpickle and run, kept in the core so that remote workers need only the
worker package preprocessing already uses (`beam_preprocess.worker_package`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler

from doctags_core import beam_io
from doctags_core import export_contract as contract
from doctags_core.config import DataConfig
from doctags_core.records import BadRecord, dead_letter, parse_unlabeled

SUMMARY_FILE = "summary.json"
MODEL_BATCH = 256  # documents per model call: the in-process benchmark's batch


class DoctagsModelHandler(ModelHandler[list, list, object]):
    """Runs batches of ``(id, text)`` documents through a doctags export.

    One example is a whole batch of documents (RunInference's own batching is
    set to one example per call), so the records stay batched from the
    reader to the writer and the model sees up to ``model_batch`` texts per
    call.

    Args:
        model_path: The export: a version directory or a model base path.
        with_scores: Also return every label's score.
        model_batch: Texts per model call.
    """

    def __init__(self, model_path: str, with_scores: bool = False, model_batch: int = MODEL_BATCH):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._model_path = model_path
        self._with_scores = with_scores
        self._model_batch = model_batch

    def load_model(self):
        from doctags_core.tagger import Tagger

        return Tagger(self._model_path)

    def run_inference(self, batch: Sequence[list], model, inference_args=None) -> Iterable[list]:
        """One list of output rows per document batch."""
        for docs in batch:
            yield self._tag(docs, model)

    def _tag(self, docs: list, model) -> list[dict]:
        rows = []
        for start in range(0, len(docs), self._model_batch):
            chunk = docs[start : start + self._model_batch]
            out = model.raw([text for _, text in chunk])
            tags = contract.decode_tags(out["tags"], out["tag_scores"])
            for i, ((doc_id, _), pairs) in enumerate(zip(chunk, tags)):
                row = {
                    "id": doc_id,
                    "tags": [t for t, _ in pairs],
                    "tag_scores": [round(s, 6) for _, s in pairs],
                }
                if self._with_scores:
                    row["scores"] = [round(float(s), 6) for s in out["scores"][i]]
                rows.append(row)
        return rows

    def get_num_bytes(self, batch: Sequence[list]) -> int:
        return sum(len(text) for docs in batch for _, text in docs)

    def get_metrics_namespace(self) -> str:
        return "doctags_batch_tagging"


def parse_for_tagging(record_batch, cfg: DataConfig):
    """``(id, text)`` documents of a raw batch; what cannot be tagged is a dead letter."""
    docs = []
    for source, raw in record_batch:
        try:
            docs.append(parse_unlabeled(raw, cfg))
        except BadRecord as e:
            beam.metrics.Metrics.counter(beam_io.NAMESPACE, f"dead_letter_{e.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                beam_io.DEAD_LETTER_TAG, dead_letter(source, e.reason, e.detail, raw)
            )
    if docs:
        yield docs


def rows_to_text(rows: list[dict]) -> str:
    """A batch of output rows as JSONL text (one element; the sink adds the last newline)."""
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows)


def write_summary(_, records_read, written, dead_counts, output_dir: str) -> dict:
    """Writes ``summary.json``: counts, dead letters by reason, and the accounting check."""
    dead = int(sum(dead_counts.values()))
    summary = {
        "records_read": int(records_read),
        "rows_written": int(written),
        "dead_letter": {"total": dead, "by_reason": dict(sorted(dead_counts.items()))},
        "all_records_accounted_for": int(records_read) == int(written) + dead,
    }
    with FileSystems.create(os.path.join(output_dir, SUMMARY_FILE)) as f:
        f.write(json.dumps(summary, indent=2).encode("utf-8"))
    return summary
