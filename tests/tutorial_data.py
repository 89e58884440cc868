"""Small corpora shaped like the data of the tutorials doctags replaces, from real Reuters text.

- `write_movie_csv`: the first tutorial's CSV (MPST-like): ``imdb_id``,
  ``title``, ``plot_synopsis``, ``tags`` as a messy comma string
  ("earn, acq ,crude"), ``split`` with train/test/val and a low-cardinality
  ``synopsis_source`` column that must not be taken for the labels.
- `write_headlines_jsonl`: the second tutorial's JSONL of headlines: a
  ``tags`` list, a ``headline``, a ``short_description``, an unrelated
  ``authors`` string with commas, a ``date``, and no id.

The texts and labels are Reuters documents (the first line is the title),
so a model trained on them learns something real.
"""

from __future__ import annotations

import csv
import gzip
import io
import json

from tests.conftest import reuters_records


def _title_and_body(text: str) -> tuple[str, str]:
    title, _, body = text.strip().partition("\n")
    return title.strip().title(), " ".join(body.split())


def _messy_tags(labels: list[str], i: int) -> str:
    joins = (", ", " ,", ",", " , ")
    out = labels[0]
    for label in labels[1:]:
        out += joins[i % len(joins)] + label
    return out


def movie_rows(limit_train: int = 300, limit_test: int = 100) -> list[dict]:
    """Rows of the first tutorial's CSV; every 8th train document is marked ``val``."""
    rows = []
    for i, rec in enumerate(reuters_records(limit_train, limit_test)):
        title, body = _title_and_body(rec["text"])
        split = rec["split"]
        if split == "train" and i % 8 == 3:
            split = "val"
        rows.append(
            {
                "imdb_id": f"tt{1000000 + i:07d}",
                "title": title,
                "plot_synopsis": body,
                "tags": _messy_tags(rec["labels"], i),
                "split": split,
                "synopsis_source": "imdb" if i % 3 else "wikipedia",
            }
        )
    return rows


def write_movie_csv(path, rows=None, bom: bool = False, compress: bool = False) -> str:
    """The movie CSV (optionally with Excel's byte order mark, optionally gzipped)."""
    rows = movie_rows() if rows is None else rows
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    data = (("\ufeff" if bom else "") + buffer.getvalue()).encode("utf-8")
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def headline_records(limit_train: int = 300, limit_test: int = 100) -> list[dict]:
    """Records of the second tutorial's JSONL: headlines with a tags list, no id."""
    out = []
    for i, rec in enumerate(reuters_records(limit_train, limit_test)):
        title, body = _title_and_body(rec["text"])
        out.append(
            {
                "headline": title,
                "short_description": " ".join(body.split()[:40]),
                "authors": "Reuters Staff, " + ("Jane Doe" if i % 2 else "John Roe"),
                "date": f"1987-03-{1 + i % 28:02d}",
                "tags": rec["labels"],
            }
        )
    return out


def write_headlines_jsonl(path, records=None, compress: bool = False) -> str:
    """The headlines JSONL (optionally gzipped)."""
    records = headline_records() if records is None else records
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def write_parquet(path, rows: list[dict]) -> str:
    """Rows as a Parquet file (lists stay lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)
