"""Deterministic train/validation/test assignment.

A document's split depends only on its id (and the fractions), never on the
order or sharding of the input, so every runner and every re-run agrees.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def id_fraction(doc_id: str) -> float:
    """Maps an id to a stable number in [0, 1) (first 8 bytes of SHA-1)."""
    digest = hashlib.sha1(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normalize_split(value) -> str | None:
    """The canonical split name for a data value, or None if unrecognised."""
    if value is None:
        return None
    return _SPLIT_ALIASES.get(str(value).strip().lower())


def assign_split(
    doc_id: str,
    given_split: str | None,
    validation_fraction: float,
    test_fraction: float,
) -> str:
    """Chooses the split of one document.

    With a given split, ``test`` and ``validation`` are kept and validation is
    carved out of ``train`` by id hash. Without one, the hash decides among
    all three. The hash ranges are disjoint: validation takes [0, v), test
    takes [v, v + t).
    """
    u = id_fraction(doc_id)
    if given_split in ("test", "validation"):
        return given_split
    if given_split == "train":
        return "validation" if u < validation_fraction else "train"
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"
