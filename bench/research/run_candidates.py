"""Issue-11 research runner: one corpus preprocessed once, candidates trained, scores dumped.

    python bench/research/run_candidates.py prep      --corpus reuters
    python bench/research/run_candidates.py train     --corpus reuters --variant cnn
    python bench/research/run_candidates.py baselines --corpus reuters

``train`` runs the real trainer (`trainer.train.train`, the same code as
`doctags train`) with the variant's config overrides on the shared
preprocessed splits, then scores the VALIDATION and TEST splits with the
trained Keras model through the trainer's own data pipeline (the records'
cleaned text: what the exported model computes from the raw text) and
writes ``WORK/CORPUS/VARIANT/scores.npz`` (y/s for both splits, labels,
train seconds). Thresholds, ensembles and selection rules are then studied
offline in numpy (`offline.py`); test is only ever used for reporting.

``baselines`` runs bench/quality.py's TF-IDF + LinearSVC (train+validation)
and fastText (train, threshold on validation) on the same splits and label
set, and writes ``WORK/CORPUS/baselines.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CORPORA_DIR = os.environ.get("DOCTAGS_CORPORA", "/tmp/q/corpora")
WORK = os.environ.get("DOCTAGS_RESEARCH_WORK", "/tmp/q/runs")

# name -> (input pattern, split field); every corpus runs configs/reuters.yaml's settings.
CORPORA = {
    "reuters": (os.path.join(REPO, "data/reuters21578/reuters21578-modapte.jsonl.gz"), "split"),
    "debtags": (os.path.join(CORPORA_DIR, "debtags/debtags.jsonl.gz"), "split"),
    "synth500short": (os.path.join(CORPORA_DIR, "synth500short/corpus-*.jsonl.gz"), None),
    "synth20long": (os.path.join(CORPORA_DIR, "synth20long/corpus-*.jsonl.gz"), None),
}

MLP = {"model.family": "tfidf_mlp", "model.hidden_units": 512}
CNN = {"model.family": "cnn"}
VARIANTS: dict[str, dict] = {
    "mlp": MLP,
    "cnn": CNN,
    "mlp_wbce": {**MLP, "loss.name": "weighted_bce"},
    "cnn_wbce": {**CNN, "loss.name": "weighted_bce"},
    "mlp_focal": {**MLP, "loss.name": "focal"},
    "cnn_focal": {**CNN, "loss.name": "focal"},
    "mlp_balanced": {**MLP, "loss.sample_weights": "balanced"},
    "mlp_h1024": {**MLP, "model.hidden_units": 1024},
    "mlp_d5": {**MLP, "model.dropout": 0.5},
    "mlp_lr1e3": {**MLP, "training.learning_rate": 0.001},
    "mlp_p5": {**MLP, "training.early_stopping_patience": 5, "training.epochs": 30},
    # tfidf_mlp peaks after ONE epoch at lr 0.002 on 3 of 4 corpora: slower and more dropout.
    "mlp_slow": {**MLP, "training.learning_rate": 0.0005, "model.dropout": 0.5},
}


def _paths(corpus: str) -> tuple[str, str]:
    shared = os.path.join(WORK, corpus, "_shared")
    return shared, os.path.join(shared, "data")


def _config(corpus: str, output_dir: str, overrides: dict | None = None):
    from doctags_core.config import load_config

    pattern, split_field = CORPORA[corpus]
    return load_config(
        os.path.join(REPO, "configs/reuters.yaml"),
        {
            "name": corpus,
            "output_dir": output_dir,
            "data.input_pattern": pattern,
            "data.split_field": split_field,
            "export.model_name": corpus,
            **(overrides or {}),
        },
    )


def prep(corpus: str) -> None:
    from doctags.cli import main as doctags_main

    shared, data_dir = _paths(corpus)
    if os.path.exists(os.path.join(data_dir, "metadata.json")):
        print(f"{corpus}: already preprocessed")
        return
    pattern, split_field = CORPORA[corpus]
    sets = {
        "output_dir": shared,
        "data.input_pattern": pattern,
        "data.split_field": split_field,
        "name": corpus,
        "preprocess.raw_text_splits": ["train", "validation", "test"],  # baselines read train
    }
    args = ["preprocess", "--config", os.path.join(REPO, "configs/reuters.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    started = time.time()
    if doctags_main(args) != 0:
        raise SystemExit("preprocess failed")
    print(f"{corpus}: preprocessed in {time.time() - started:.0f}s")


def score_splits(cfg, model) -> dict:
    """y and scores of the validation and test splits, through the trainer's pipeline."""
    from doctags_core import schema
    from trainer import data as data_lib
    from trainer.train import predict_split

    labels = data_lib.load_labels(cfg.data_dir)
    vectorizer = data_lib.make_model_vectorizer(cfg)
    encoder = data_lib.make_label_encoder(labels)
    out = {"labels": labels}
    for split in ("validation", "test"):
        ds = data_lib.make_dataset(
            schema.split_pattern(cfg.data_dir, split), vectorizer, encoder, 256
        )
        started = time.time()
        y, s = predict_split(model, ds)
        out[f"y_{split}"], out[f"s_{split}"] = y.astype(bool), s.astype("float32")
        out[f"{split}_predict_s"] = time.time() - started
    return out


def train_variant(corpus: str, variant: str, overrides: dict) -> None:
    import numpy as np

    from trainer.train import train

    _, data_dir = _paths(corpus)
    out = os.path.join(WORK, corpus, variant)
    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "data")
    if not os.path.exists(link):
        os.symlink(data_dir, link)
    cfg = _config(corpus, out, overrides)
    result = train(cfg)
    scores = score_splits(cfg, result.model)
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    np.savez_compressed(
        os.path.join(out, "scores.npz"),
        train_seconds=result.seconds,
        epochs_run=result.epochs_run,
        best_epoch=summary.get("best_epoch", -1),
        **scores,
    )
    print(
        f"{corpus}/{variant}: {result.epochs_run} epochs in {result.seconds:.0f}s; "
        f"val micro {result.validation_metrics['micro_f1']:.4f} "
        f"macro {result.validation_metrics['macro_f1']:.4f}"
    )


def baselines(corpus: str, only: str | None) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_quality", os.path.join(REPO, "bench", "quality.py")
    )
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    from doctags_core.data_files import read_split

    _, data_dir = _paths(corpus)
    labels = [ln.strip() for ln in open(os.path.join(data_dir, "labels.txt")) if ln.strip()]
    sp = {s: read_split(data_dir, s)[1:] for s in ("train", "validation", "test")}
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = sp["train"], sp["validation"], sp["test"]
    path = os.path.join(WORK, corpus, "baselines.json")
    rows = json.load(open(path)) if os.path.exists(path) else {}
    if only in (None, "linearsvc"):
        rows["linearsvc"] = quality.tfidf_linearsvc(tr_x + va_x, tr_y + va_y, te_x, te_y, labels)
        print(corpus, rows["linearsvc"], flush=True)
    if only in (None, "fasttext"):
        rows["fasttext"] = quality.fasttext_ova(tr_x, tr_y, va_x, va_y, te_x, te_y, labels)
        print(corpus, rows["fasttext"], flush=True)
    json.dump(rows, open(path, "w"), indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prep", "train", "baselines"])
    parser.add_argument("--corpus", required=True, choices=list(CORPORA))
    parser.add_argument("--variant", help=f"one of {', '.join(VARIANTS)}")
    parser.add_argument("--set", action="append", default=[], help="extra KEY=JSON override")
    parser.add_argument("--only", choices=["linearsvc", "fasttext"])
    args = parser.parse_args()
    if args.command == "prep":
        prep(args.corpus)
    elif args.command == "baselines":
        baselines(args.corpus, args.only)
    else:
        overrides = dict(VARIANTS[args.variant.split("+")[0]])
        for pair in args.set:
            key, _, value = pair.partition("=")
            overrides[key] = json.loads(value)
        train_variant(args.corpus, args.variant, overrides)


if __name__ == "__main__":
    main()
