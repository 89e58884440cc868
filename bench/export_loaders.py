"""Every kind of export through TF Serving's session loader, under two TensorFlow releases.

    python bench/export_loaders.py [--work /tmp/doctags-export-loaders]

Trains one small model per export kind on a slice of the bundled Reuters
corpus (each model family, WordPiece, per-label thresholds with
``always_top1``, and ``model.family: auto``), exports it, and runs
`serving.loader_check` on every export: with the project's TensorFlow and
with the TensorFlow release of the targeted TF Serving
(`doctags_core.export_contract.TF_SERVING_VERSION`, built by
`serving.tf_serving_env`). One line per export and TensorFlow version.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from serving.tf_serving_env import ensure_env, run_loader_check  # noqa: E402

REUTERS = os.path.join(REPO, "data", "reuters21578", "reuters21578-modapte.jsonl.gz")
SMALL = {"sequence_length": 64, "embedding_dim": 16, "hidden_units": 16}
KINDS = {
    "dnn": {"model": {"family": "dnn", **SMALL}},
    "cnn": {"model": {"family": "cnn", **SMALL, "conv_filters": 8, "kernel_sizes": [2, 3]}},
    "bigru": {"model": {"family": "bigru", **SMALL, "rnn_units": 8}},
    "transformer": {
        "model": {
            "family": "transformer",
            **SMALL,
            "transformer_layers": 1,
            "transformer_ff_dim": 16,
        }
    },
    "tfidf_mlp": {"model": {"family": "tfidf_mlp", **SMALL}},
    "wordpiece": {"model": {"family": "cnn", **SMALL, "tokenizer": "wordpiece"}},
    "per_label_top1": {
        "model": {"family": "dnn", **SMALL},
        "threshold": {"per_label": True, "min_positives": 2, "always_top1": True},
    },
    "auto": {"model": {"family": "auto", **SMALL, "conv_filters": 8}},
}


def slice_corpus(path: str, train: int = 600, test: int = 150) -> str:
    seen = {"train": 0, "test": 0}
    limit = {"train": train, "test": test}
    with gzip.open(REUTERS, "rt", encoding="utf-8") as src, open(path, "w") as out:
        for line in src:
            split = json.loads(line)["split"]
            if seen[split] < limit[split]:
                seen[split] += 1
                out.write(line)
    return path


def export(kind: str, sections: dict, corpus: str, work: str, data_dir: str | None) -> str:
    out = os.path.join(work, kind)
    config = {
        "name": kind,
        "output_dir": out,
        "data": {"input_pattern": corpus, "split_field": "split"},
        "preprocess": {"vocab_size": 5000, "min_count": 1},
        "training": {"epochs": 2, "batch_size": 32},
        "export": {"model_name": kind},
        **sections,
    }
    path = os.path.join(work, f"{kind}.yaml")
    with open(path, "w") as f:
        json.dump(config, f)
    if data_dir and not os.path.exists(os.path.join(out, "data")):
        os.makedirs(out, exist_ok=True)
        os.symlink(data_dir, os.path.join(out, "data"))
    commands = [] if data_dir else [["preprocess"]]
    for command in [*commands, ["train"], ["export", "--overwrite"]]:
        subprocess.run(
            [sys.executable, "-m", "doctags", *command, "--config", path], check=True, cwd=REPO
        )
    return os.path.join(out, "export", kind, "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/doctags-export-loaders")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    corpus = slice_corpus(os.path.join(args.work, "reuters-slice.jsonl"))
    exports, data_dir = {}, None
    for kind in args.kinds.split(","):
        exports[kind] = export(kind, KINDS[kind], corpus, args.work, data_dir)
        data_dir = data_dir or os.path.join(args.work, kind, "data")
    lines = []
    for python in (sys.executable, ensure_env()):
        done = run_loader_check(python, list(exports.values()))
        lines += [f"{line}" for line in done.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")]
    print()
    for kind, path in exports.items():
        for line in lines:
            if path in line:
                print(f"{kind:15s} {line.replace(path, '').replace(':', '', 1).strip()}")


if __name__ == "__main__":
    main()
