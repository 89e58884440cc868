"""Pure per-batch steps of the Beam job: parse, encode, route, count.

Elements stay batches from the first step to the last, so per-element
overhead is paid once per batch of documents, not once per document or
per token. The heavy work of a batch (cleaning, tokenizing, serializing
Examples, pre-counting tokens) is one call into a traced TF graph
(`beam_preprocess.encode`); what is left here is routing numpy arrays.
Each function is unit-tested without Beam.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import chain

import numpy as np

from doctags_core.config import DataConfig
from doctags_core.records import (
    EMPTY_AFTER_CLEANING,
    BadRecord,
    Document,
    TextLimit,
    dead_letter,
    document_from_row,
    observe_rows,
    row_of,
)
from doctags_core.splits import SPLITS, assign_split


@dataclass
class DocBatch:
    """A batch of encoded documents, column by column.

    Attributes:
        ids: Document ids.
        labels: Label names per document.
        splits: ``train``/``validation``/``test`` per document.
        token_splits: ``[n + 1]`` offsets; document ``i`` has
            ``token_splits[i + 1] - token_splits[i]`` tokens.
        examples: Serialized ``tf.train.Example`` per document.
        truncated: Documents of the batch whose text was cut to
            ``preprocess.max_chars``.
    """

    ids: list[str]
    labels: list[tuple[str, ...]]
    splits: list[str]
    token_splits: np.ndarray
    examples: np.ndarray
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document."""
        return np.diff(self.token_splits)


def parse_batch(records: list[tuple[str, object]], cfg: DataConfig, limit: TextLimit | None = None):
    """Parses ``(source, raw)`` records into documents and dead letters.

    Args:
        records: Raw records from a reader.
        cfg: Which fields mean what.
        limit: The longest text kept (`TextLimit`).

    Returns:
        ``(documents, dead_letters, field_counts)``; documents and dead
        letters together hold every input record, ``field_counts`` is
        `records.observe_rows` over the records that parsed into fields.
    """
    docs: list[Document] = []
    dead: list[dict] = []
    rows: list[dict] = []
    for source, raw in records:
        try:
            row = row_of(raw)
        except BadRecord as e:
            dead.append(dead_letter(source, e.reason, e.detail, raw))
            continue
        rows.append(row)
        try:
            docs.append(document_from_row(row, cfg, limit))
        except BadRecord as e:
            dead.append(dead_letter(source, e.reason, e.detail, raw))
    fields: dict = {}
    observe_rows(rows, cfg, fields)
    return docs, dead, fields


def train_first(docs: list[Document], cfg: DataConfig) -> tuple[list[Document], list[str]]:
    """The documents with their splits, training documents first (a stable order).

    The encoder counts tokens of training documents only; when those come
    first their tokens are one slice (`beam_preprocess.encode`). Each split
    keeps its documents' order, and the sink writes each split's examples
    in that order, so the files are the same as without the reordering.
    """
    splits = [
        assign_split(d.doc_id, d.given_split, cfg.validation_fraction, cfg.test_fraction)
        for d in docs
    ]
    order = sorted(range(len(docs)), key=lambda i: splits[i] != "train")
    return [docs[i] for i in order], [splits[i] for i in order]


def encode_batch(
    docs: list[Document], splits: list[str], encoder, raw_text_splits: tuple[str, ...]
) -> DocBatch:
    """Runs the batch through the TF graph.

    Args:
        docs: Parsed documents, training documents first (`train_first`).
        splits: Each document's split, from `train_first`.
        encoder: ``beam_preprocess.encode.make_batch_encoder(...)``.
        raw_text_splits: The splits whose records keep their raw text
            (``preprocess.raw_text_splits``), when the encoder writes it.
    """
    label_values = [label for d in docs for label in d.labels]
    label_splits = np.cumsum([0] + [len(d.labels) for d in docs], dtype=np.int64)
    out = encoder(
        [d.doc_id for d in docs],
        [d.text for d in docs],
        label_values,
        label_splits,
        np.array([s == "train" for s in splits], dtype=bool),
        np.array([s in raw_text_splits for s in splits], dtype=bool),
    )
    return DocBatch(
        ids=[d.doc_id for d in docs],
        labels=[d.labels for d in docs],
        splits=splits,
        token_splits=out.token_splits,
        examples=out.examples,
        truncated=sum(d.truncated for d in docs),
    )


def without_empty(batch: DocBatch, texts: list[str] | None = None):
    """Splits off the documents that have no token left after cleaning.

    An empty document teaches the model nothing and would be trained on
    as an all-padding example; it becomes an ``empty_after_cleaning`` dead
    letter instead (counted in ``metadata.json``).

    Args:
        batch: An encoded batch.
        texts: The batch's raw texts, for the dead letters.

    Returns:
        ``(batch of the non-empty documents, dead letters)``.
    """
    lengths = batch.lengths
    empty = np.flatnonzero(lengths == 0)
    if not len(empty):
        return batch, []
    dead = [
        dead_letter(
            "",
            EMPTY_AFTER_CLEANING,
            f"document {batch.ids[i]!r} has no token after cleaning",
            {"id": batch.ids[i], "text": texts[i] if texts is not None else ""},
        )
        for i in empty.tolist()
    ]
    keep = np.flatnonzero(lengths > 0)
    kept = DocBatch(
        ids=[batch.ids[i] for i in keep.tolist()],
        labels=[batch.labels[i] for i in keep.tolist()],
        splits=[batch.splits[i] for i in keep.tolist()],
        token_splits=np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64),
        examples=batch.examples[keep],
        truncated=batch.truncated,
    )
    return kept, dead


def examples_by_split(batch: DocBatch):
    """Yields ``(split, [serialized examples])`` for each split in the batch."""
    codes = np.array([SPLITS.index(s) for s in batch.splits], dtype=np.int8)
    for code, split in enumerate(SPLITS):
        chosen = batch.examples[codes == code]
        if len(chosen):
            yield split, chosen.tolist()


def token_count_shards(counts):
    """Splits drained token counts by combine shard.

    The vocabulary is learned on the train split only (the encoder counted
    train documents only). Keying by shard lets the combine downstream run
    in parallel over ``vocab_shards`` keys instead of one accumulator.

    Args:
        counts: `beam_preprocess.encode.TokenCounts`.

    Yields:
        ``(shard, (tokens, counts, document_counts))`` per non-empty shard,
        tokens as a list of bytes and counts as int64 arrays.
    """
    if not len(counts.tokens):
        return
    order = np.argsort(counts.shards, kind="stable")
    cuts = np.flatnonzero(np.diff(counts.shards[order])) + 1
    for part in np.split(order, cuts):
        yield (
            int(counts.shards[part[0]]),
            (counts.tokens[part].tolist(), counts.counts[part], counts.doc_counts[part]),
        )


def _histogram(lengths: np.ndarray) -> dict[int, int]:
    """``{length: documents}`` for the lengths that occur."""
    counts = np.bincount(lengths) if len(lengths) else np.zeros(0, dtype=np.int64)
    seen = np.flatnonzero(counts)
    return dict(zip(seen.tolist(), counts[seen].tolist()))


def batch_statistics(batch: DocBatch) -> dict:
    """Counts per split, label counts per split and token-length histograms.

    Two histograms: all documents (the data report), and the train split
    alone, which the trainer may read to fit ``model.sequence_length`` to
    the corpus without looking at the test split.
    """
    lengths = batch.lengths
    is_train = np.array([s == "train" for s in batch.splits], dtype=bool)
    stats = {
        "documents": Counter(batch.splits),
        "labels": {},
        "label_assignments": Counter(),
        "length_histogram": _histogram(lengths),
        "train_length_histogram": _histogram(lengths[is_train]),
        "empty_after_cleaning": int(np.count_nonzero(lengths == 0)),
        "truncated": int(batch.truncated),
    }
    by_split: dict[str, list] = {}
    for split, labels in zip(batch.splits, batch.labels):
        by_split.setdefault(split, []).append(labels)
    for split, label_lists in by_split.items():
        assigned = list(chain.from_iterable(label_lists))
        stats["labels"][split] = Counter(assigned)
        stats["label_assignments"][split] += len(assigned)
    return stats
