"""A commented starting config for one's own data: what `doctags init` writes.

`doctags_core.field_detection` proposes the fields from a sample
(`doctags_core.data_sample`); this module writes them as YAML whose comments
say what was detected, why, and what the alternatives are, so the person
reading it can correct a guess without reading the code. The file is
checked before it is written: it must parse back to the values intended and
pass the config validation that `doctags run` applies.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass

import yaml

from doctags_core.atomic_files import atomic_write
from doctags_core.config import config_from_dict
from doctags_core.data_sample import Sample, read_sample
from doctags_core.field_detection import LabelGuess, Proposal, SplitGuess, propose, shown_value

WIDTH = 88
_NAME_SUFFIXES = re.compile(r"(\.(gz|gzip|bz2|zst))?$")
_FORM_WORDS = {
    "list": "a list of names",
    "json_list": "a JSON list of names in a string",
    "single": "one name per record",
}


@dataclass(frozen=True)
class InitResult:
    """What `write_init_config` wrote and what it rests on."""

    path: str
    text: str
    raw: dict
    proposal: Proposal
    sample: Sample


def experiment_name(path: str) -> str:
    """``mpst`` for ``data/mpst.csv.gz``: the file name without extensions, safe for paths."""
    stem = _NAME_SUFFIXES.sub("", os.path.basename(path))
    stem = os.path.splitext(stem)[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-").lower()
    return name or "doctags"


def relative_path(path: str, directory: str) -> str:
    """``path`` relative to ``directory`` when that is short, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.path.abspath(directory))
    return relative if relative.count("..") <= 2 else absolute


def _yaml(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.split("\n...")[0].strip()


class _Writer:
    """YAML lines with comment blocks above keys and short notes beside them."""

    def __init__(self):
        self.lines: list[str] = []

    def comment(self, text: str, indent: int = 0) -> None:
        prefix = " " * indent + "# "
        for paragraph in text.split("\n"):
            self.lines += textwrap.wrap(
                paragraph,
                WIDTH,
                initial_indent=prefix,
                subsequent_indent=prefix + "  ",
                break_on_hyphens=False,
            ) or [prefix.rstrip()]

    def key(self, name: str, value, note: str = "", indent: int = 0) -> None:
        line = f"{' ' * indent}{name}: {_yaml(value)}"
        self.lines.append(f"{line:<{indent + 30}} # {note}" if note else line)

    def section(self, name: str) -> None:
        self.lines += ["", f"{name}:"]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _most_frequent(counts, n: int = 5) -> str:
    return ", ".join(f"{name} ({k})" for name, k in counts.most_common(n))


def _text_comment(p: Proposal) -> str:
    profiles = p.profiles
    primary = max(p.text_fields, key=lambda f: profiles[f].mean_chars)
    lines = [
        "Text: these fields are joined (with a newline) into each document. "
        f"{primary} has the longest values ({profiles[primary].mean_words:.0f} words on "
        "average)."
    ]
    for name in p.text_fields:
        if name != primary:
            lines.append(
                f"{name} ({profiles[name].mean_words:.0f} words) is added as "
                + ("a title-style field." if profiles[name].mean_words < 20 else "long text too.")
            )
    alternatives = []
    if len(p.text_fields) > 1:
        alternatives.append(f"[{primary}] alone")
    alternatives += [f"{n} ({profiles[n].mean_words:.0f} words)" for n in p.text_alternatives]
    if alternatives:
        lines.append("Alternatives: " + "; ".join(alternatives) + ".")
    return "\n".join(lines)


def _label_comment(label: LabelGuess, others: tuple[LabelGuess, ...]) -> str:
    if label.form == "delimited":
        form = f'names separated by "{label.delimiter}" (spaces around names are dropped)'
    else:
        form = _FORM_WORDS[label.form]
    lines = [
        f"Labels: {label.field} holds {form}, e.g. {shown_value(label.example)}.",
        f"{len(label.counts)} distinct labels in the sample, {label.per_record:.1f} per "
        f"labelled record; most frequent: {_most_frequent(label.counts)}.",
    ]
    if others:
        described = [
            f"{g.field} ({_FORM_WORDS.get(g.form, f'names separated by {g.delimiter!r}')})"
            for g in others[:4]
        ]
        lines.append("Other candidates: " + ", ".join(described) + ".")
    return "\n".join(lines)


def _delimiter_note(label: LabelGuess) -> str:
    if label.form == "delimited":
        return "detected: splits the label string"
    if label.form == "single":
        return "no delimiter in the values: one label each"
    return "only for labels given as strings"


def _id_comment(p: Proposal) -> str:
    if p.id_field:
        text = (
            f"Id: {p.id_field} is unique in the sample. The split of a record is a hash of "
            "its id, so every run splits alike. null would use a SHA-1 of the text instead "
            "(identical texts then share an id and a split)."
        )
    else:
        text = (
            "Id: no field looks like a unique id (present in every record, unique, without "
            "spaces, named id, *_id, uuid, url ...), so null: each record's id is a SHA-1 of "
            "its text, and identical texts share an id and a split."
        )
    if p.id_alternatives:
        text += f" Also unique in the sample: {', '.join(p.id_alternatives)}."
    return text


def _split_values(split: SplitGuess) -> str:
    parts = []
    for value, n in split.values.items():
        meaning = split.meaning[value]
        parts.append(f"{value} ({n})" + (f" -> {meaning}" if meaning and meaning != value else ""))
    return ", ".join(parts)


def _split_comment(p: Proposal) -> str:
    if p.split is None:
        text = (
            "Split: no field holds split names (train, test, val/valid/dev ...), so null: "
            "test_fraction of the records become test and validation_fraction validation, "
            "by a hash of the id."
        )
    else:
        s = p.split
        text = (
            f"Split: {s.field} holds {_split_values(s)}. test rows stay test, validation rows "
            "(val, valid, dev, validation) stay validation, train rows are train"
            + (
                "."
                if "validation" in s.splits
                else "; validation_fraction of them (by id hash) become validation."
            )
        )
        unknown = [v for v, m in s.meaning.items() if m is None]
        if unknown:
            text += (
                f" Values {', '.join(unknown)} are no split name: those records become dead "
                "letters (reason invalid_split)."
            )
        if s.missing:
            text += f" {s.missing} sampled records have no value: the id hash splits them."
    for name, reason in p.split_rejected:
        text += f" Not used: {name} {reason}."
    return text


def _unlabeled_note(label: LabelGuess, rows: int) -> str:
    if label.unlabeled:
        return (
            f"Unlabeled: {label.unlabeled} of {rows} sampled records have no label; they "
            "become dead letters (reason missing_labels) unless allow_unlabeled is true, "
            "which keeps them as documents with no tag."
        )
    return "Unlabeled: every sampled record has a label; true would keep records without any."


def _header(sample: Sample, out_name: str, input_pattern: str) -> str:
    read = f"{'all' if sample.complete else 'the first'} {sample.scanned} records"
    if len(sample.rows) < sample.scanned:
        read = f"a uniform sample of {len(sample.rows)} of {read}"
    text = (
        f"doctags config written by `doctags init --input {input_pattern}` from {read} of "
        f"{os.path.basename(sample.path)} ({sample.format})."
    )
    if sample.files > 1:
        text += f" The pattern matches {sample.files} files; only the first was read."
    if sample.unreadable:
        text += f" {sample.unreadable} records could not be read (they would be dead letters)."
    text += (
        f"\nCheck the choices below, then: doctags run --config {out_name}"
        "\nKeys left out take their defaults; `doctags config --explain KEY` explains any key."
    )
    return text


def _data_section(w: _Writer, p: Proposal, sample: Sample, input_path: str) -> dict:
    data = {"input_pattern": input_path, "format": sample.format}
    w.section("data")
    w.key("input_pattern", input_path, "relative to this file; a glob reads many", 2)
    w.key("format", sample.format, "jsonl, csv, parquet, tfrecord or auto", 2)
    w.comment(_text_comment(p), 2)
    data["text_fields"] = list(p.text_fields)
    w.key("text_fields", data["text_fields"], indent=2)
    w.comment(_label_comment(p.label, p.label_alternatives), 2)
    data["label_field"] = p.label.field
    data["label_delimiter"] = p.label.delimiter
    w.key("label_field", p.label.field, indent=2)
    w.key("label_delimiter", p.label.delimiter, _delimiter_note(p.label), 2)
    w.comment(_id_comment(p), 2)
    data["id_field"] = p.id_field
    w.key("id_field", p.id_field, indent=2)
    w.comment(_split_comment(p), 2)
    data["split_field"] = p.split.field if p.split else None
    w.key("split_field", data["split_field"], indent=2)
    own_validation = p.split is not None and "validation" in p.split.splits
    data["validation_fraction"] = 0.0 if own_validation else 0.1
    w.key(
        "validation_fraction",
        data["validation_fraction"],
        "the data has validation rows: keep train whole"
        if own_validation
        else "share of train records moved to validation",
        2,
    )
    data["test_fraction"] = 0.1
    w.key(
        "test_fraction",
        0.1,
        "unused: the split field decides test" if p.split else "share of records used as test",
        2,
    )
    w.comment(_unlabeled_note(p.label, p.rows), 2)
    data["allow_unlabeled"] = False
    w.key("allow_unlabeled", False, indent=2)
    return data


def render(
    sample: Sample, proposal: Proposal, out_path: str, input_pattern: str
) -> tuple[str, dict]:
    """The commented YAML text and the plain values it holds.

    Args:
        sample: What was read.
        proposal: What was detected in it.
        out_path: Where the config will live (relative paths start there).
        input_pattern: The ``--input`` as given (a file or a glob).
    """
    directory = os.path.dirname(os.path.abspath(out_path))
    name = experiment_name(sample.path)
    input_path = relative_path(input_pattern, directory)
    w = _Writer()
    w.comment(_header(sample, os.path.basename(out_path), input_pattern))
    w.key("name", name)
    w.key("output_dir", f"runs/{name}", "every artifact; relative to this file")
    raw = {"name": name, "output_dir": f"runs/{name}"}
    raw["data"] = _data_section(w, proposal, sample, input_path)
    w.lines.append("")
    w.comment(
        "The network: every model key takes its default; `doctags config --explain "
        "model.family` lists the families (dnn and tfidf_mlp train fastest on a CPU), e.g."
    )
    w.comment("model:\n  family: dnn")
    w.section("training")
    w.key("epochs", 15, "at most: early stopping ends sooner", 2)
    w.section("export")
    w.key("model_name", name, f"the served name: runs/{name}/export/{name}/1", 2)
    w.key("version", 1, "an existing version is replaced only with --overwrite", 2)
    raw["training"] = {"epochs": 15}
    raw["export"] = {"model_name": name, "version": 1}
    return w.text(), raw


def write_init_config(
    input_pattern: str, out_path: str, force: bool = False, sample_size: int = 2000
) -> InitResult:
    """Samples the input, proposes the fields and writes the commented config.

    Raises:
        FileExistsError: when ``out_path`` exists and ``force`` is False.
        SampleError: when the input cannot be read.
        DetectionError: when no field looks like labels or text.
        ConfigError: never for a correct proposal: the text is validated
            exactly as `doctags run` validates it before it is written.
    """
    if os.path.exists(out_path) and not force:
        raise FileExistsError(f"{out_path} exists; pass --force to replace it or --out elsewhere")
    sample = read_sample(input_pattern, size=sample_size)
    proposal = propose(sample.rows)
    text, raw = render(sample, proposal, out_path, input_pattern)
    parsed = yaml.safe_load(text)
    if parsed != raw:  # the comments must not change what the YAML says
        raise AssertionError(f"doctags init wrote YAML that reads back as {parsed!r}")
    config_from_dict(parsed, base_dir=os.path.dirname(os.path.abspath(out_path)))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    atomic_write(out_path, text)
    return InitResult(out_path, text, raw, proposal, sample)
