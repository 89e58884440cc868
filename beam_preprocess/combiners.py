"""CombineFns for the distributed statistics of the Beam job.

All accumulators are bounded by the vocabulary (per shard), the label set or
the range of document lengths, never by the number of documents; the one
exception is `DuplicateHashesFn` (only with ``preprocess.dedupe``), which
holds 16 bytes per distinct document in numpy arrays.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import apache_beam as beam
import numpy as np

RESERVED_TOKENS = (b"", b"[UNK]")  # TextVectorization's padding and OOV entries


def _add_counts(acc: dict, tokens, counts, doc_counts) -> dict:
    get = acc.get
    for token, n, df in zip(tokens, counts, doc_counts):
        slot = get(token)
        if slot is None:
            acc[token] = [n, df]
        else:
            slot[0] += n
            slot[1] += df
    return acc


class MergeTokenCountsFn(beam.CombineFn):
    """Sums the per-batch token tables of one shard into ``{token: [count, df]}``.

    Inputs are ``(tokens, counts, document_counts)`` from
    `batches.token_count_shards` (already distinct within the batch), so the
    work per batch is one dict update per distinct token, not per token.
    """

    def create_accumulator(self):
        return {}

    def add_input(self, acc, table):
        tokens, counts, doc_counts = table
        return _add_counts(
            acc, tokens, np.asarray(counts).tolist(), np.asarray(doc_counts).tolist()
        )

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            _add_counts(
                merged, acc.keys(), (v[0] for v in acc.values()), (v[1] for v in acc.values())
            )
        return merged

    def extract_output(self, acc):
        return acc


def top_tokens(counts: dict, k: int, min_count: int) -> list[tuple[int, bytes, int]]:
    """The ``k`` most frequent tokens with ``count >= min_count``.

    Returns ``(count, token, document_count)`` tuples; ties are broken by the
    token so the vocabulary is the same on every run.
    """
    eligible = (
        (n, token, df)
        for token, (n, df) in counts.items()
        if n >= min_count and token not in RESERVED_TOKENS
    )
    return heapq.nsmallest(k, eligible, key=lambda t: (-t[0], t[1]))


def _rank(item: tuple[int, bytes, int]) -> tuple[int, bytes]:
    return (-item[0], item[1])


class TopTokensFn(beam.CombineFn):
    """Merges per-shard top-K lists into the global top-K (bounded memory).

    The accumulator is the top-K so far, sorted by (-count, token), a total
    order (tokens are distinct); each input is sorted the same way (it
    already is: `top_tokens` returns it so), and the two are merged, keeping
    the first K. Re-selecting the K smallest of accumulator + input with
    ``heapq.nsmallest`` on every input cost 0.86 s of CPU for 16 shards of
    6,000 tokens at K = 20,000 (a fixed cost of every job, ~3% of a
    100k-document one); merging sorted lists costs 0.23 s (medians of 3
    alternating runs), with the same result.
    """

    def __init__(self, k: int):
        self._k = k

    def _merge(self, sorted_lists):
        return list(itertools.islice(heapq.merge(*sorted_lists, key=_rank), self._k))

    def create_accumulator(self):
        return []

    def add_input(self, acc, shard_top):
        return self._merge([acc, sorted(shard_top, key=_rank)])

    def merge_accumulators(self, accumulators):
        return self._merge(list(accumulators))

    def extract_output(self, acc):
        return acc


class StatisticsFn(beam.CombineFn):
    """Merges `batches.batch_statistics` dicts into corpus statistics."""

    def create_accumulator(self):
        return {
            "documents": Counter(),
            "labels": {},
            "label_assignments": Counter(),
            "length_histogram": Counter(),
            "train_length_histogram": Counter(),
            "empty_after_cleaning": 0,
            "truncated": 0,
        }

    def add_input(self, acc, stats):
        acc["documents"].update(stats["documents"])
        for split, counts in stats["labels"].items():
            acc["labels"].setdefault(split, Counter()).update(counts)
        acc["label_assignments"].update(stats["label_assignments"])
        acc["length_histogram"].update(stats.get("lengths", ()))
        acc["length_histogram"].update(stats.get("length_histogram", {}))
        acc["train_length_histogram"].update(stats.get("train_length_histogram", {}))
        acc["empty_after_cleaning"] += stats["empty_after_cleaning"]
        acc["truncated"] += stats.get("truncated", 0)
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


class FieldCountsFn(beam.CombineFn):
    """Sums the per-batch field counts (`records.observe_rows`) for the data report.

    Field names (``key:...``) are capped at `MAX_FIELD_NAMES`, the most
    frequent kept, so records with ever-new keys stay a small accumulator.
    """

    MAX_FIELD_NAMES = 50

    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, counts):
        acc.update({k: v for k, v in counts.items() if k != "distinct_keys"})
        keys = [k for k in acc if k.startswith("key:")]
        if len(keys) > 2 * self.MAX_FIELD_NAMES:
            for k in sorted(keys, key=lambda k: -acc[k])[self.MAX_FIELD_NAMES :]:
                del acc[k]
        return acc

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        keys = sorted((k for k in acc if k.startswith("key:")), key=lambda k: (-acc[k], k))
        out = {k: v for k, v in acc.items() if not k.startswith("key:")}
        out.update({k: acc[k] for k in keys[: self.MAX_FIELD_NAMES]})
        return out


class _HashTally:
    """Sorted distinct hashes with their counts, plus not yet merged inputs."""

    __slots__ = ("hashes", "counts", "pending", "pending_size")

    def __init__(self):
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_size = 0

    def add(self, hashes: np.ndarray, counts: np.ndarray) -> None:
        self.pending.append((hashes, counts))
        self.pending_size += len(hashes)
        if self.pending_size > max(1 << 18, len(self.hashes)):
            self.compact()  # amortised: the sorted part at most doubles each time

    def compact(self) -> None:
        if not self.pending:
            return
        hashes = np.concatenate([self.hashes] + [h for h, _ in self.pending])
        counts = np.concatenate([self.counts] + [c for _, c in self.pending])
        self.pending, self.pending_size = [], 0
        if not len(hashes):
            return
        order = np.argsort(hashes, kind="stable")
        hashes, counts = hashes[order], counts[order]
        starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
        # counts are capped at 2: "seen more than once" is all that matters
        self.hashes = hashes[starts]
        self.counts = np.minimum(np.add.reduceat(counts, starts), 2)


class DuplicateHashesFn(beam.CombineFn):
    """The normalized-text hashes that occur more than once in the corpus.

    Inputs are uint64 arrays (one per batch); the output is the sorted array
    of duplicated hashes, used as a side input to route duplicates.
    """

    def create_accumulator(self):
        return _HashTally()

    def add_input(self, acc, hashes):
        hashes = np.asarray(hashes, dtype=np.uint64)
        acc.add(hashes, np.ones(len(hashes), dtype=np.int64))
        return acc

    def merge_accumulators(self, accumulators):
        merged = _HashTally()
        for acc in accumulators:
            acc.compact()
            merged.add(acc.hashes, acc.counts)
        merged.compact()
        return merged

    def extract_output(self, acc):
        acc.compact()
        return acc.hashes[acc.counts > 1]


def length_summary(histogram: Counter) -> dict:
    """Count, mean, min, max and percentiles of token lengths from a histogram."""
    total = sum(histogram.values())
    if total == 0:
        return {"documents": 0}
    ordered = sorted(histogram.items())
    summary = {
        "documents": total,
        "mean": sum(length * n for length, n in ordered) / total,
        "min": ordered[0][0],
        "max": ordered[-1][0],
    }
    for q in (50, 90, 95, 99):
        rank, seen = q / 100 * total, 0
        for length, n in ordered:
            seen += n
            if seen >= rank:
                summary[f"p{q}"] = length
                break
    return summary
