"""The config reference, generated from the config dataclasses' own docstrings.

Every dataclass of `doctags_core.config` documents its fields in a
Google-style ``Attributes:`` section. This module reads those sections, with
each field's type and default, into one reference: `doctags config
--explain [KEY]` prints it and ``docs/config.md`` is generated from it. The
code stays the one source, so the docs cannot drift from it, and a field
added without a doc fails a test (`missing_docs`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass

import yaml

from doctags_core.config import Config, ConfigError

_ENTRY = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_RST_LITERAL = re.compile(r"``(.+?)``")
WIDTH = 88
DOCS_PAGE = "docs/config.md"


@dataclass(frozen=True)
class KeyDoc:
    """One documented config key.

    Attributes:
        key: Dotted key, e.g. ``data.label_field``.
        type: Its YAML type in words (``string or null``), or ``section``.
        default: The default as YAML text (empty for a section).
        doc: The field's doc from its dataclass' ``Attributes:`` section
            (empty when missing).
    """

    key: str
    type: str
    default: str
    doc: str

    @property
    def is_section(self) -> bool:
        """True for a nested mapping such as ``data``."""
        return self.type == "section"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` from the class docstring's Google-style ``Attributes:`` section.

    Continuation lines are joined with single spaces; RST literals
    (````x````) become Markdown ones (```x```).
    """
    lines = (inspect.getdoc(cls) or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    base = _indent(lines[start])
    docs: dict[str, list[str]] = {}
    entry_indent, current = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        if _indent(line) <= base:
            break  # the next section of the docstring
        entry_indent = _indent(line) if entry_indent is None else entry_indent
        match = _ENTRY.match(line.strip())
        if _indent(line) == entry_indent and match:
            current = match.group(1)
            docs[current] = [match.group(2)]
        elif current is not None:
            docs[current].append(line.strip())
    return {k: _RST_LITERAL.sub(r"`\1`", " ".join(v).strip()) for k, v in docs.items()}


def describe_type(tp) -> str:
    """A field's annotation in the words a YAML writer needs."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {describe_type(args[0])}s"
    names = {str: "string", int: "integer", float: "number", bool: "true/false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def default_text(value) -> str:
    """A default as it would be written in YAML (``null``, ``[a, b]``, ``0.1``)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.split("\n...")[0].strip()


def reference(cls: type = Config, prefix: str = "") -> list[KeyDoc]:
    """Every key of the config tree in declaration order, each section before its keys."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.append(KeyDoc(key, "section", "", docs.get(f.name, "")))
            out += reference(tp, key + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(KeyDoc(key, describe_type(tp), default_text(default), docs.get(f.name, "")))
    return out


def missing_docs(cls: type = Config) -> list[str]:
    """Keys whose dataclass has no ``Attributes:`` entry for them."""
    return [k.key for k in reference(cls) if not k.doc]


def select(key: str | None, cls: type = Config) -> list[KeyDoc]:
    """The entries for ``key``: everything, a section with its keys, or one key.

    Raises:
        ConfigError: for an unknown key, naming the closest known ones.
    """
    entries = reference(cls)
    if not key:
        return entries
    chosen = [e for e in entries if e.key == key or e.key.startswith(key + ".")]
    if not chosen:
        close = difflib.get_close_matches(key, [e.key for e in entries], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"no config key {key!r}{hint} (`doctags config --explain` lists all)")
    return chosen


def _wrap(text: str, indent: int) -> str:
    pad = " " * indent
    return textwrap.fill(text, WIDTH, initial_indent=pad, subsequent_indent=pad)


def explain(key: str | None = None, cls: type = Config) -> str:
    """The reference as terminal text (`doctags config --explain [KEY]`)."""
    blocks = []
    for e in select(key, cls):
        if e.is_section:
            blocks.append(f"{e.key}:\n{_wrap(e.doc, 4)}")
        else:
            blocks.append(f"  {e.key}  ({e.type}, default {e.default})\n{_wrap(e.doc, 6)}")
    return "\n\n".join(blocks) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(cls: type = Config) -> str:
    """The reference as the Markdown page ``docs/config.md``."""
    parts = [
        "# Config reference",
        "",
        "Every key of the experiment YAML, its type, default and meaning. Generated from the "
        "`Attributes:` sections of the dataclasses in `doctags_core/config.py` by "
        "`doctags config --explain --markdown > docs/config.md`; do not edit by hand (a test "
        "compares the two). `doctags config --explain KEY` prints one key or one section; "
        "`doctags init --input FILE` writes a commented config for your data.",
    ]
    top = [e for e in reference(cls) if "." not in e.key and not e.is_section]
    groups: list[tuple[str, str, list[KeyDoc]]] = [("top level", "", top)]
    for e in reference(cls):
        if e.is_section:
            groups.append((e.key, e.doc, []))
        elif "." in e.key:
            groups[-1][2].append(e)
    for title, doc, keys in groups:
        parts += ["", f"## `{title}`" if title != "top level" else "## Top level", ""]
        if doc:
            parts += [doc, ""]
        parts += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for e in keys:
            parts.append(f"| `{e.key}` | {e.type} | `{_cell(e.default)}` | {_cell(e.doc)} |")
    return "\n".join(parts) + "\n"
