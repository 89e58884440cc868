"""CombineFns for the distributed statistics of the Beam job.

All accumulators are bounded by the vocabulary (per shard), the label set or
the range of document lengths, never by the number of documents.
"""

from __future__ import annotations

import heapq
from collections import Counter

import apache_beam as beam

RESERVED_TOKENS = (b"", b"[UNK]")  # TextVectorization's padding and OOV entries


class MergeTokenCountsFn(beam.CombineFn):
    """Sums ``{token: [count, document_count]}`` dicts of one shard."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        for token, (n, df) in counts.items():
            slot = acc.get(token)
            if slot is None:
                acc[token] = [n, df]
            else:
                slot[0] += n
                slot[1] += df
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            self.add_input(merged, acc)
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


class TopTokensFn(beam.CombineFn):
    """Merges per-shard top-K lists into the global top-K (bounded memory)."""

    def __init__(self, k: int):
        self._k = k

    def _prune(self, items):
        return heapq.nsmallest(self._k, items, key=lambda t: (-t[0], t[1]))

    def create_accumulator(self):
        return []

    def add_input(self, acc, shard_top):
        return self._prune(list(acc) + list(shard_top))

    def merge_accumulators(self, accumulators):
        return self._prune([t for acc in accumulators for t in acc])

    def extract_output(self, acc):
        return self._prune(acc)


class StatisticsFn(beam.CombineFn):
    """Merges `batches.batch_statistics` dicts into corpus statistics."""

    def create_accumulator(self):
        return {
            "documents": Counter(),
            "labels": {},
            "label_assignments": Counter(),
            "length_histogram": Counter(),
            "empty_after_cleaning": 0,
        }

    def add_input(self, acc, stats):
        acc["documents"].update(stats["documents"])
        for split, counts in stats["labels"].items():
            acc["labels"].setdefault(split, Counter()).update(counts)
        acc["label_assignments"].update(stats["label_assignments"])
        acc["length_histogram"].update(stats.get("lengths", ()))
        acc["length_histogram"].update(stats.get("length_histogram", {}))
        acc["empty_after_cleaning"] += stats["empty_after_cleaning"]
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


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
