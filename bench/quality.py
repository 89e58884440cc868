"""Quality benchmark: doctags configurations vs TF-IDF + OneVsRest(LinearSVC).

    python bench/quality.py --config configs/reuters.yaml [--variants cnn,dnn] [--input GLOB]
        [--split-field split|none] [--work /tmp/quality] [--reuse]

The corpus is preprocessed ONCE by the Beam job; every doctags variant (a set
of config overrides, see VARIANTS) is trained, exported and evaluated on the
exported SavedModel, and the scikit-learn baseline is trained on exactly the
same train+validation documents and scored on the same test documents and
label set. One table: micro-F1, macro-F1, train seconds, predict docs/s
(raw strings through the exported model at batch 256; the baseline's
vectorize + predict).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doctags.cli import main as doctags_main  # noqa: E402
from doctags_core.data_files import read_split  # noqa: E402
from doctags_core.labels import multi_hot  # noqa: E402
from doctags_core.metrics import format_table, summary_metrics  # noqa: E402
from doctags_core.tagger import Tagger  # noqa: E402

# name -> config overrides; every variant starts from the --config file.
VARIANTS: dict[str, dict] = {
    "dnn": {"model.family": "dnn"},
    "cnn": {"model.family": "cnn"},
    "cnn_wbce_perlabel": {
        "model.family": "cnn",
        "loss.name": "weighted_bce",
        "threshold.per_label": True,
    },
    "cnn_balanced": {
        "model.family": "cnn",
        "loss.sample_weights": "balanced",
        "threshold.per_label": True,
    },
    "cnn_wordpiece": {"model.family": "cnn", "model.tokenizer": "wordpiece"},
    "bigru": {"model.family": "bigru"},
    "transformer": {"model.family": "transformer"},
    "tfidf_mlp": {"model.family": "tfidf_mlp", "model.hidden_units": 512},
    "tfidf_mlp_wbce_perlabel": {
        "model.family": "tfidf_mlp",
        "model.hidden_units": 512,
        "loss.name": "weighted_bce",
        "threshold.per_label": True,
    },
}


def _sets(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def sklearn_baseline(data_dir: str, labels: list[str]) -> dict:
    """TF-IDF (1-2 grams, sublinear tf) + one LinearSVC per label, on raw text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    texts, ys = [], []
    for split in ("train", "validation"):
        _, t, y = read_split(data_dir, split)
        texts += t
        ys += y
    _, test_texts, test_labels = read_split(data_dir, "test")
    started = time.time()
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x = vectorizer.fit_transform(texts)
    y = multi_hot(ys, labels)
    keep = y.sum(axis=0) > 0  # a label with no positive example cannot be fitted
    clf = OneVsRestClassifier(LinearSVC(C=1.0)).fit(x, y[:, keep])
    train_seconds = time.time() - started
    started = time.time()
    pred_kept = clf.predict(vectorizer.transform(test_texts))
    predict_seconds = time.time() - started
    pred = multi_hot([[] for _ in test_texts], labels)
    pred[:, keep] = pred_kept
    m = summary_metrics(multi_hot(test_labels, labels), pred)
    return {
        "system": "sklearn tfidf(1,2) + OvR LinearSVC",
        "micro_f1": m["micro_f1"],
        "macro_f1": m["macro_f1"],
        "train_s": train_seconds,
        "predict_docs_s": len(test_texts) / predict_seconds,
    }


def run_variant(name: str, overrides: dict, base: list[str], work: str, data_dir: str) -> dict:
    """Trains, exports and evaluates one variant on the shared preprocessed data."""
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "data")
    if not os.path.exists(link):
        os.symlink(data_dir, link)
    args = [*base, *_sets({**overrides, "output_dir": out})]
    for command in (["train"], ["export", "--overwrite"], ["evaluate"]):
        if doctags_main([command[0], *args, *command[1:]]) != 0:
            raise SystemExit(f"variant {name}: doctags {command[0]} failed")
    report = json.load(open(os.path.join(out, "eval", "metrics_test.json")))
    summary = json.load(open(os.path.join(out, "model", "training_summary.json")))
    tagger = Tagger(report["model"])
    _, texts, _ = read_split(data_dir, "test")
    tagger.predict(texts[:256])  # warm-up: trace and load before timing
    started = time.time()
    tagger.predict(texts)
    return {
        "system": f"doctags {name}",
        "micro_f1": report["metrics"]["micro_f1"],
        "macro_f1": report["metrics"]["macro_f1"],
        "train_s": summary["seconds"],
        "predict_docs_s": len(texts) / (time.time() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/reuters.yaml", help="base experiment YAML")
    parser.add_argument("--input", help="override data.input_pattern (a JSONL corpus)")
    parser.add_argument(
        "--split-field", help="override data.split_field ('none': split by id hash)"
    )
    parser.add_argument("--variants", default="cnn,cnn_wbce_perlabel,tfidf_mlp_wbce_perlabel")
    parser.add_argument("--work", default="/tmp/doctags-quality")
    parser.add_argument("--reuse", action="store_true", help="keep preprocessed data if present")
    args = parser.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    common: dict = {}
    if args.input:
        common["data.input_pattern"] = os.path.abspath(args.input)
    if args.split_field:
        common["data.split_field"] = None if args.split_field == "none" else args.split_field
    base = ["--config", args.config, *_sets(common)]
    shared = os.path.join(args.work, "_shared")
    data_dir = os.path.join(shared, "data")
    if not (args.reuse and os.path.exists(os.path.join(data_dir, "metadata.json"))):
        started = time.time()
        if doctags_main(["preprocess", *base, *_sets({"output_dir": shared})]) != 0:
            raise SystemExit("preprocess failed")
        print(f"(preprocess: {time.time() - started:.0f}s)")
    rows = []
    for variant in args.variants.split(","):
        rows.append(run_variant(variant, VARIANTS[variant], base, args.work, data_dir))
        print("row:", json.dumps(rows[-1]), flush=True)  # a long run keeps what it finished
    labels = [line.strip() for line in open(os.path.join(data_dir, "labels.txt")) if line.strip()]
    rows.append(sklearn_baseline(data_dir, labels))
    print()
    print(format_table(rows, ["system", "micro_f1", "macro_f1", "train_s", "predict_docs_s"]))


if __name__ == "__main__":
    main()
