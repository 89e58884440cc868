"""Pure per-batch steps of the Beam job: parse, clean, split, count, serialize.

Elements stay batches from the first step to the last, so per-element
overhead is paid once per batch of documents, not once per document or
per token. Each function here is plain Python (plus TF for cleaning) and is
unit-tested without Beam.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass

from beam_preprocess.records import BadRecord, Document, dead_letter, parse_record
from doctags_core import schema
from doctags_core.config import DataConfig
from doctags_core.splits import assign_split


@dataclass
class DocBatch:
    """A batch of cleaned documents, column by column."""

    ids: list[str]
    texts: list[str]
    labels: list[tuple[str, ...]]
    splits: list[str]
    tokens: list[list[bytes]]

    def __len__(self) -> int:
        return len(self.ids)


def parse_batch(records: list[tuple[str, object]], cfg: DataConfig):
    """Parses ``(source, raw)`` records into documents and dead letters.

    Returns:
        ``(documents, dead_letters)``; together they hold every input record.
    """
    docs: list[Document] = []
    dead: list[dict] = []
    for source, raw in records:
        try:
            docs.append(parse_record(raw, cfg))
        except BadRecord as e:
            dead.append(dead_letter(source, e.reason, e.detail, raw))
    return docs, dead


def clean_batch(docs: list[Document], cleaner, cfg: DataConfig) -> DocBatch:
    """Runs the shared TF cleaning on a whole batch and assigns splits.

    Args:
        docs: Parsed documents.
        cleaner: ``doctags_core.cleaning.make_batch_cleaner(steps)``.
        cfg: Data settings (split fractions).
    """
    values, row_splits = cleaner([d.text for d in docs])
    values = values.numpy().tolist()
    row_splits = row_splits.numpy().tolist()
    tokens = [values[row_splits[i] : row_splits[i + 1]] for i in range(len(docs))]
    return DocBatch(
        ids=[d.doc_id for d in docs],
        texts=[d.text for d in docs],
        labels=[d.labels for d in docs],
        splits=[
            assign_split(d.doc_id, d.given_split, cfg.validation_fraction, cfg.test_fraction)
            for d in docs
        ],
        tokens=tokens,
    )


def serialize_batch(batch: DocBatch, keep_raw_text: bool):
    """Yields ``(split, serialized tf.train.Example)`` for each document."""
    for i in range(len(batch)):
        text = batch.texts[i] if keep_raw_text else None
        yield (
            batch.splits[i],
            schema.make_example(batch.ids[i], batch.tokens[i], list(batch.labels[i]), text),
        )


def token_shard(token: bytes, num_shards: int) -> int:
    """Stable shard of a token for the keyed count combine (same on every worker)."""
    return zlib.crc32(token) % num_shards


def count_train_tokens(batch: DocBatch, num_shards: int):
    """Pre-aggregates token and document counts of the batch's TRAIN documents.

    The vocabulary is learned on the train split only, so validation and test
    stay unseen. Counts are grouped by shard so the combine downstream runs
    in parallel over ``num_shards`` keys instead of one global accumulator.

    Yields:
        ``(shard, {token: [count, document_count]})`` for each non-empty shard.
    """
    counts: Counter = Counter()
    doc_counts: Counter = Counter()
    for split, tokens in zip(batch.splits, batch.tokens):
        if split == "train":
            counts.update(tokens)
            doc_counts.update(set(tokens))
    shards: dict[int, dict[bytes, list[int]]] = {}
    for token, n in counts.items():
        shards.setdefault(token_shard(token, num_shards), {})[token] = [n, doc_counts[token]]
    yield from shards.items()


def batch_statistics(batch: DocBatch) -> dict:
    """Counts per split, label counts per split and token-length figures."""
    stats = {
        "documents": Counter(batch.splits),
        "labels": {},
        "label_assignments": Counter(),
        "lengths": [len(t) for t in batch.tokens],
        "empty_after_cleaning": sum(1 for t in batch.tokens if not t),
    }
    for split, labels in zip(batch.splits, batch.labels):
        stats["labels"].setdefault(split, Counter()).update(labels)
        stats["label_assignments"][split] += len(labels)
    return stats
