"""A real multi-label corpus from this machine: Debian package descriptions + debtags.

    apt-get update -o Acquire::Languages=en      # Packages (with Tag:) + Translation-en
    python bench/corpora/debian_tags.py --out /tmp/debtags/debtags.jsonl.gz

Each binary package of the apt lists that has debtags becomes one document:

- ``text``: the short description, a period, then the long description
  (from ``*_i18n_Translation-en*``, joined by ``Description-md5``; its " ."
  paragraph breaks become blank lines);
- ``labels``: its ``Tag:`` values (``facet::value``, e.g. ``role::program``,
  ``implemented-in::python``) without the bookkeeping facet ``special::``;
- ``split``: train / validation / test by a hash of the SOURCE package, so
  the binaries of one source (``foo``, ``foo-dev``, ``foo-doc``, which share
  most of their long description) never straddle two splits.

Hundreds of labels with a long tail and ~60-word texts: the shape of the
held-out corpus users reported. Packages without a long description or
without a tag left are skipped. Nothing is fetched: only the lists apt
already has. The data is Debian's (DFSG); do not commit it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import hashlib
import json
import lzma
import os
import subprocess

LISTS = "/var/lib/apt/lists"


def read_list(path: str) -> str:
    """A Packages/Translation file as text, whatever apt compressed it with."""
    if path.endswith(".lz4"):  # apt's own helper decompresses every format apt uses
        return subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", path],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8").read()
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8").read()
    return open(path, encoding="utf-8").read()


def paragraphs(text: str):
    """deb822 paragraphs as dicts; continuation lines are kept, joined by newlines."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def long_description(value: str) -> tuple[str, str]:
    """``(short, long)`` of a Description field (" ." lines are paragraph breaks)."""
    short, _, rest = value.partition("\n")
    lines = [line[1:] if line.startswith(" ") else line for line in rest.split("\n")]
    body = "\n".join("" if line.strip() == "." else line.rstrip() for line in lines)
    return short.strip(), body.strip()


def split_of(source: str, validation_fraction: float, test_fraction: float) -> str:
    u = int.from_bytes(hashlib.sha1(source.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def build(
    lists_dir: str = LISTS, validation_fraction: float = 0.1, test_fraction: float = 0.2
) -> list[dict]:
    """The documents, sorted by package name."""
    translations: dict[tuple[str, str], str] = {}
    for path in sorted(glob.glob(os.path.join(lists_dir, "*_i18n_Translation-en*"))):
        for p in paragraphs(read_list(path)):
            if "Description-en" in p:
                translations[(p["Package"], p.get("Description-md5", ""))] = p["Description-en"]
    if not translations:
        raise SystemExit(
            f"no Translation-en under {lists_dir}: run apt-get update -o Acquire::Languages=en"
        )
    docs: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(lists_dir, "*_Packages*"))):
        for p in paragraphs(read_list(path)):
            name = p.get("Package")
            if not name or name in docs or "Tag" not in p:
                continue
            tags = [t.strip() for t in p["Tag"].replace("\n", " ").split(",") if t.strip()]
            labels = sorted({t for t in tags if not t.startswith("special::")})
            description = translations.get((name, p.get("Description-md5", "")))
            if not labels or not description:
                continue
            short, body = long_description(description)
            if not body:
                continue
            source = p.get("Source", name).split(" ")[0]
            docs[name] = {
                "id": name,
                "text": f"{short}.\n\n{body}",
                "labels": labels,
                "split": split_of(source, validation_fraction, test_fraction),
            }
    return [docs[k] for k in sorted(docs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output .jsonl.gz")
    parser.add_argument("--lists-dir", default=LISTS)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args()
    docs = build(args.lists_dir, args.validation_fraction, args.test_fraction)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    splits = collections.Counter(d["split"] for d in docs)
    labels = collections.Counter(lb for d in docs for lb in d["labels"])
    words = sorted(len(d["text"].split()) for d in docs)
    print(
        f"{len(docs)} documents {dict(splits)}, {len(labels)} labels "
        f"(>=10 docs: {sum(c >= 10 for c in labels.values())}, "
        f"<5: {sum(c < 5 for c in labels.values())}), "
        f"{sum(len(d['labels']) for d in docs) / len(docs):.2f} labels/doc, "
        f"median {words[len(words) // 2]} words, mean {sum(words) / len(words):.0f}"
    )


if __name__ == "__main__":
    main()
