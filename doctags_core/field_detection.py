"""Which fields of unknown data hold the text, the labels, the id and the split.

Pure functions over sampled records (plain dicts), used by `doctags init`.
Each guess keeps the statistics it rests on, so the config it proposes can
say in comments why it chose a field and what else it could have chosen: a
person checks the proposal, it is not an oracle. The rules:

- split: a field whose values are (nearly) all split names that
  `doctags_core.splits` knows (``train``, ``test``, ``val``/``valid``/
  ``dev`` for validation ...), with at least two different splits;
- id: a field present in every record, unique, short and without spaces,
  whose name says id (``id``, ``*_id``, ``uuid``, ``url`` ...); none: ``null``
  (the id is then a hash of the text);
- labels: lists of names, JSON lists in strings, strings of short names
  joined by ``,`` ``|`` or ``;`` (the most used), or one short name repeated
  across records; the name (``tags``, ``labels``, ``genre`` ...) weighs most;
- text: the string field with the longest values, with title-style
  companions (``title``, ``headline``, ``summary`` ...) and other long fields.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from doctags_core.labels import LabelError, parse_labels
from doctags_core.splits import normalize_split

LABEL_NAMES = frozenset(
    "tags tag labels label categories category topics topic genres genre classes class "
    "keywords subjects targets target".split()
)
TITLE_NAMES = frozenset(
    "title headline heading subject summary abstract description short_description "
    "lead teaser".split()
)
SPLIT_NAMES = frozenset("split set subset fold partition usage".split())
ID_NAMES = frozenset("id _id uuid guid key docid identifier url uri link".split())
DELIMITERS = (",", "|", ";")
_ID_SUFFIX = re.compile(r"(?:^|[_\-.])id$|[a-z0-9](?:Id|ID)$", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z0-9](?:Id|ID)$")


class DetectionError(ValueError):
    """The sample has no field that can play a needed part; the message lists the fields."""


@dataclass
class FieldProfile:
    """What one field's values look like over the sample.

    Attributes:
        name: The field name.
        rows: Records in the sample.
        present: Records where the field holds a non-empty value.
        strings: Its non-empty string values.
        lists: Its list values.
        numbers: How many values are numbers (ints and floats, not bools).
    """

    name: str
    rows: int = 0
    present: int = 0
    strings: list[str] = field(default_factory=list)
    lists: list[list] = field(default_factory=list)
    numbers: int = 0

    @property
    def mean_words(self) -> float:
        """Mean words per string value."""
        return sum(len(s.split()) for s in self.strings) / max(len(self.strings), 1)

    @property
    def mean_chars(self) -> float:
        """Mean characters per string value."""
        return sum(len(s) for s in self.strings) / max(len(self.strings), 1)

    @property
    def distinct_share(self) -> float:
        """Distinct string values over string values (1.0: every value differs)."""
        return len(set(self.strings)) / max(len(self.strings), 1)


@dataclass(frozen=True)
class LabelGuess:
    """A field read as labels.

    Attributes:
        field: The field name.
        form: ``list`` (a JSON list), ``json_list`` (a string holding one),
            ``delimited`` (names joined by ``delimiter``) or ``single`` (one
            name per record).
        delimiter: The ``label_delimiter`` to configure.
        score: How label-like the field is (higher is more).
        counts: Records per label name in the sample.
        labelled: Records with at least one label.
        unlabeled: Records without any (missing, empty list, blank string).
        example: One raw value, as the data holds it.
    """

    field: str
    form: str
    delimiter: str
    score: float
    counts: Counter
    labelled: int
    unlabeled: int
    example: object

    @property
    def per_record(self) -> float:
        """Mean labels per labelled record."""
        return sum(self.counts.values()) / max(self.labelled, 1)


@dataclass(frozen=True)
class SplitGuess:
    """A field read as the data's own split.

    Attributes:
        field: The field name.
        values: Records per raw value, e.g. ``{"train": 700, "val": 100}``.
        meaning: What each raw value means (``None``: an unknown value, whose
            records are dead letters).
        missing: Records without a value (split by the id hash instead).
    """

    field: str
    values: dict[str, int]
    meaning: dict[str, str | None]
    missing: int

    @property
    def splits(self) -> set[str]:
        """The canonical splits present."""
        return {m for m in self.meaning.values() if m}


@dataclass(frozen=True)
class Proposal:
    """Everything `doctags init` proposes for the ``data`` section.

    Attributes:
        rows: Records in the sample.
        fields: Every field seen, in first-seen order.
        profiles: Each field's profile.
        text_fields: The fields joined into the text.
        text_alternatives: Other text-like fields, not chosen.
        label: The label field.
        label_alternatives: Other label-like fields, best first.
        id_field: The id field, or None (a hash of the text).
        id_alternatives: Fields unique in the sample whose name does not say id.
        split: The split field, if any.
        split_rejected: Split-like fields not used, with the reason.
    """

    rows: int
    fields: list[str]
    profiles: dict[str, FieldProfile]
    text_fields: tuple[str, ...]
    text_alternatives: tuple[str, ...]
    label: LabelGuess
    label_alternatives: tuple[LabelGuess, ...]
    id_field: str | None
    id_alternatives: tuple[str, ...]
    split: SplitGuess | None
    split_rejected: tuple[tuple[str, str], ...]


def profile_fields(rows: list[dict]) -> dict[str, FieldProfile]:
    """One profile per field, in the order the fields first appear."""
    profiles: dict[str, FieldProfile] = {}
    for row in rows:
        for name in row:
            profiles.setdefault(name, FieldProfile(name))
    for profile in profiles.values():
        profile.rows = len(rows)
        for row in rows:
            value = row.get(profile.name)
            if isinstance(value, str):
                if value.strip():
                    profile.present += 1
                    profile.strings.append(value)
            elif isinstance(value, (list, tuple)):
                if value:
                    profile.present += 1
                profile.lists.append(list(value))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                profile.present += 1
                profile.numbers += 1
    return profiles


# --- split -----------------------------------------------------------------------
def guess_split(profile: FieldProfile) -> SplitGuess | None:
    """The field as a split column, or None when its values are not split names."""
    if len(profile.strings) < 0.5 * profile.rows:
        return None
    counts = Counter(s.strip() for s in profile.strings)
    meaning = {value: normalize_split(value) for value in counts}
    known = sum(n for value, n in counts.items() if meaning[value])
    if known < 0.9 * len(profile.strings):
        return None
    return SplitGuess(profile.name, dict(counts.most_common()), meaning, profile.rows - known)


def _split_choice(profiles) -> tuple[SplitGuess | None, list[tuple[str, str]]]:
    chosen, rejected = None, []
    guesses = [g for g in map(guess_split, profiles.values()) if g]
    guesses.sort(key=lambda g: g.field.lower() not in SPLIT_NAMES)  # named "split" first
    for guess in guesses:
        if len(guess.splits) < 2:
            rejected.append((guess.field, f"holds only {sorted(guess.splits)[0]} in the sample"))
        elif "test" not in guess.splits:
            rejected.append(
                (guess.field, "has no test rows in the sample: the test split would be empty")
            )
        elif chosen is None:
            chosen = guess
        else:
            rejected.append((guess.field, f"split names too, but {chosen.field} came first"))
    return chosen, rejected


# --- id ----------------------------------------------------------------------------
def id_name_score(name: str) -> int:
    """3 for ``id``, 2 for names that say id (``imdb_id``, ``docId``, ``url``), else 0."""
    lowered = name.lower()
    if lowered in ("id", "_id"):
        return 3
    if lowered in ID_NAMES or _ID_SUFFIX.search(name) or _CAMEL_ID.search(name):
        return 2
    return 0


def is_unique_key(profile: FieldProfile) -> bool:
    """Present in every record, unique, and short without spaces, like an id."""
    if profile.present < profile.rows or profile.lists:
        return False
    if profile.numbers:
        return profile.numbers == profile.rows
    values = [s.strip() for s in profile.strings]
    if len(set(values)) != len(values):
        return False
    return all(len(v) <= 200 and not any(c.isspace() for c in v) for v in values)


def _unique_numbers(profile: FieldProfile, rows: list[dict]) -> bool:
    values = [row.get(profile.name) for row in rows]
    return len(set(map(str, values))) == len(values)


# --- labels ------------------------------------------------------------------------
def _names_short(pieces: list[str]) -> bool:
    """Label names are short: a few words, a few dozen characters."""
    if not pieces:
        return False
    words = sum(len(p.split()) for p in pieces) / len(pieces)
    chars = sum(len(p) for p in pieces) / len(pieces)
    return words <= 4 and chars <= 40


def _label_form(profile: FieldProfile) -> tuple[str, str, float] | None:
    """``(form, delimiter, base score)`` of a label-like field, or None."""
    if profile.lists and len(profile.lists) >= 0.9 * max(profile.present, 1):
        items = [x for value in profile.lists for x in value]
        if all(isinstance(x, str) for x in items) and _names_short([str(x) for x in items]):
            return "list", ",", 3.0
        return None
    strings = [s.strip() for s in profile.strings]
    if not strings or len(strings) < 0.9 * max(profile.present, 1):
        return None
    if sum(s.startswith("[") for s in strings) >= 0.9 * len(strings):
        return "json_list", ",", 3.0
    best = None
    for delimiter in DELIMITERS:
        share = sum(delimiter in s for s in strings) / len(strings)
        pieces = [p.strip() for s in strings for p in s.split(delimiter) if p.strip()]
        if share >= 0.05 and _names_short(pieces) and (best is None or share > best[1]):
            best = (delimiter, share)
    if best:
        return "delimited", best[0], 3.0
    if _names_short(strings):
        return "single", ",", 1.0
    return None


def _mostly_numbers(strings: list[str]) -> bool:
    return sum(any(c.isdigit() for c in s) for s in strings) >= 0.5 * max(len(strings), 1)


def _label_lists(profile: FieldProfile, rows: list[dict], delimiter: str) -> list[list[str]]:
    """Each record's labels as the Beam job will read them (`parse_labels`)."""
    out = []
    for row in rows:
        try:
            out.append(parse_labels(row.get(profile.name), delimiter))
        except LabelError:
            out.append([])
    return out


def _example_index(lists: list[list[str]]) -> int:
    """A record with a few labels (2 to 4) to show, else the one with the most."""
    few = next((i for i, names in enumerate(lists) if 2 <= len(names) <= 4), None)
    return few if few is not None else max(range(len(lists)), key=lambda i: len(lists[i]))


def guess_labels(profile: FieldProfile, rows: list[dict]) -> LabelGuess | None:
    """The field read as labels, or None when it does not look like labels."""
    form = _label_form(profile)
    if form is None:
        return None
    kind, delimiter, score = form
    lists = _label_lists(profile, rows, delimiter)
    counts = Counter(name for names in lists for name in names)
    total = sum(counts.values())
    repeat = 1 - len(counts) / total if total else 0.0
    if kind == "single" and (repeat < 0.3 or _mostly_numbers(profile.strings)):
        return None  # unique short strings are names or ids; digits are dates or codes
    score += repeat + (3.0 if profile.name.lower() in LABEL_NAMES else 0.0)
    labelled = sum(1 for names in lists if names)
    example = rows[_example_index(lists)].get(profile.name)
    return LabelGuess(
        profile.name, kind, delimiter, score, counts, labelled, len(rows) - labelled, example
    )


# --- text --------------------------------------------------------------------------
def _text_like(profile: FieldProfile) -> bool:
    if len(profile.strings) < 0.5 * profile.rows:
        return False
    urls = sum(s.lstrip().startswith(("http://", "https://")) for s in profile.strings)
    if urls >= 0.5 * len(profile.strings):
        return False
    min_words = 1 if profile.name.lower() in TITLE_NAMES else 2
    return profile.mean_words >= min_words and profile.distinct_share >= 0.5


def guess_text(profiles: dict[str, FieldProfile], used: set[str]) -> tuple[list[str], list[str]]:
    """``(chosen, other candidates)``: the longest text field and its companions.

    Companions are title-style fields (``title``, ``headline`` ...) and other
    long fields (20 words or more on average); they keep the data's order,
    so a title comes before its body as in the data.
    """
    candidates = [p for name, p in profiles.items() if name not in used and _text_like(p)]
    if not candidates:
        return [], []
    primary = max(candidates, key=lambda p: p.mean_chars)
    chosen = [
        p.name
        for p in candidates
        if p is primary or p.name.lower() in TITLE_NAMES or p.mean_words >= 20
    ]
    return chosen, [p.name for p in candidates if p.name not in chosen]


def _describe_fields(profiles: dict[str, FieldProfile]) -> str:
    parts = []
    for p in profiles.values():
        if p.lists:
            parts.append(f"{p.name} (lists)")
        elif p.strings:
            parts.append(f"{p.name} (text, {p.mean_words:.0f} words on average)")
        elif p.numbers:
            parts.append(f"{p.name} (numbers)")
        else:
            parts.append(f"{p.name} (empty)")
    return ", ".join(parts)


def _id_choice(profiles, rows, used) -> tuple[str | None, list[str]]:
    keys = [
        p
        for name, p in profiles.items()
        if name not in used and is_unique_key(p) and (not p.numbers or _unique_numbers(p, rows))
    ]
    named = sorted((p for p in keys if id_name_score(p.name)), key=lambda p: -id_name_score(p.name))
    chosen = named[0].name if named else None
    return chosen, [p.name for p in keys if p.name != chosen]


def propose(rows: list[dict]) -> Proposal:
    """The proposed split, id, label and text fields for sampled records.

    Raises:
        DetectionError: when no field looks like labels or like text; the
            message describes every field.
    """
    profiles = profile_fields(rows)
    split, split_rejected = _split_choice(profiles)
    used = {split.field} if split else set()
    used |= {name for name, _ in split_rejected}
    id_field, id_alternatives = _id_choice(profiles, rows, used)
    used |= {id_field} if id_field else set()
    labels = [g for p in profiles.values() if p.name not in used if (g := guess_labels(p, rows))]
    labels.sort(key=lambda g: -g.score)
    if not labels:
        raise DetectionError(
            "no field looks like labels (lists of names, names joined by , | or ;, or one "
            f"short name per record); the fields are: {_describe_fields(profiles)}"
        )
    text, text_alternatives = guess_text(profiles, used | {labels[0].field})
    if not text:
        raise DetectionError(
            f"no field looks like text (several words per record, mostly distinct); the "
            f"fields are: {_describe_fields(profiles)}"
        )
    return Proposal(
        rows=len(rows),
        fields=list(profiles),
        profiles=profiles,
        text_fields=tuple(text),
        text_alternatives=tuple(text_alternatives),
        label=labels[0],
        label_alternatives=tuple(labels[1:]),
        id_field=id_field,
        id_alternatives=tuple(id_alternatives),
        split=split,
        split_rejected=tuple(split_rejected),
    )


def shown_value(value) -> str:
    """A label value as the data holds it, quoted so that its spacing shows, for a comment."""
    return json.dumps(value, ensure_ascii=False)
