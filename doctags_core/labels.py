"""Label parsing and the label vocabulary, shared by every stage."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

# The dtype of every 0/1 label matrix outside TensorFlow (multi_hot, decisions,
# predict_split). Not int8: scikit-learn 1.9.1's label_binarize (used by
# OneVsRestClassifier.fit) casts the class indices arange(n_labels) to the
# indicator's own integer dtype, so with int8 indices >= 128 wrap around and
# OneVsRest(LinearSVC) fits columns to the wrong labels (micro-F1 0.41 instead of
# 0.97 at 200 labels). int32 holds any label index and any count numpy does not
# already widen, at the size of the float32 score matrix the evaluator holds anyway.
LABEL_DTYPE = "int32"


class LabelError(ValueError):
    """A label value that cannot be read as a list of label names."""


# Characters a label name never holds: a double quote or a bracket is what is
# left of broken CSV quoting or a half-parsed list (``topic-09"``, ``["a"``);
# control characters (newlines, tabs) of a field that swallowed the next one.
_NOT_IN_NAMES = re.compile(r'["\[\]{}\x00-\x1f\x7f]')


def _label_name(item, numeric: bool) -> str:
    """One label value as a name, or LabelError saying why it is not one."""
    if isinstance(item, str):
        name = item.strip()
        bad = _NOT_IN_NAMES.search(name)
        if bad:
            raise LabelError(
                f"label {name!r} holds {bad.group()!r} (broken quoting or a half-parsed list?)"
            )
        return name
    if isinstance(item, int) and not isinstance(item, bool) and numeric:
        return str(item)
    if isinstance(item, int) and not isinstance(item, bool):
        raise LabelError(
            f"label {item!r} is a number, not a name; set data.numeric_labels: true "
            "to use numbers as label names"
        )
    raise LabelError(f"label {item!r} is a {type(item).__name__}, not a name")


def parse_labels(value, delimiter: str = ",", numeric: bool = False) -> list[str]:
    """Reads a label field into a list of distinct, stripped label names.

    Accepts a list (from JSON), a JSON-list string (``'["a", "b"]'``, common
    in CSV exports) or a delimited string (``"drama, murder ,violence"``).
    Blank names are dropped and the first occurrence order is kept.

    Only strings are names: a number is one only with ``numeric`` (then
    ``1`` is the name ``"1"``), never a float or a boolean, and a name
    holding a double quote, a bracket, a brace or a control character is
    rejected (what broken quoting leaves behind), so that none of these
    becomes a label silently.

    Raises:
        LabelError: if ``value`` is None, of an unsupported type, or holds
            a value that is not a label name.
    """
    if value is None:
        raise LabelError("missing labels")
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise LabelError(f"labels look like a JSON list but do not parse: {e}") from e
        else:
            value = stripped.split(delimiter)
    elif isinstance(value, int) and not isinstance(value, bool) and numeric:
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise LabelError(f"labels must be a list or a string, got {type(value).__name__}")
    names: list[str] = []
    for item in value:
        name = _label_name(item, numeric)
        if name and name not in names:
            names.append(name)
    return names


def label_vocabulary(counts: Mapping[str, int], min_count: int = 1) -> list[str]:
    """Orders labels by descending count, then name, keeping ``>= min_count``.

    The order is deterministic so that the output column of each label is the
    same on every run over the same data.
    """
    kept = [(name, n) for name, n in counts.items() if n >= min_count]
    return [name for name, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))]


def multi_hot(label_lists: Iterable[Iterable[str]], vocabulary: list[str]):
    """Turns label-name lists into a 0/1 numpy matrix over ``vocabulary``.

    The matrix is `LABEL_DTYPE` (int32), safe to give scikit-learn estimators
    and metrics with any number of labels (not int8, see `LABEL_DTYPE`).
    """
    import numpy as np

    index = {name: i for i, name in enumerate(vocabulary)}
    rows = list(label_lists)
    y = np.zeros((len(rows), len(vocabulary)), dtype=LABEL_DTYPE)
    for r, names in enumerate(rows):
        for name in names:
            name = name.decode() if isinstance(name, bytes) else name
            if name in index:
                y[r, index[name]] = 1
    return y
