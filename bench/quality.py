"""Quality benchmark: doctags vs TF-IDF + OneVsRest(LinearSVC), same splits, same run.

    python bench/quality.py --config configs/reuters.yaml [--skip-doctags]

Runs the doctags spine (preprocess, train, export, evaluate on test) and, on
exactly the documents and labels the Beam job wrote, the scikit-learn
baseline trained on train+validation (the whole labelled training pool).
Prints one table: micro-F1, macro-F1, train seconds, predict docs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doctags.cli import main as doctags_main  # noqa: E402
from doctags_core.config import load_config  # noqa: E402
from doctags_core.labels import multi_hot  # noqa: E402
from doctags_core.metrics import format_table, summary_metrics  # noqa: E402
from serving.evaluate import read_split  # noqa: E402
from serving.model import Tagger  # noqa: E402


def sklearn_baseline(data_dir: str, labels: list[str]) -> dict:
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
    keep = y.sum(axis=0) > 0  # OneVsRest cannot fit a label with no positive example
    clf = OneVsRestClassifier(LinearSVC(C=1.0)).fit(x, y[:, keep])
    train_seconds = time.time() - started
    started = time.time()
    pred_kept = clf.predict(vectorizer.transform(test_texts))
    predict_seconds = time.time() - started
    pred = multi_hot([[] for _ in test_texts], labels)
    pred[:, keep] = pred_kept
    m = summary_metrics(multi_hot(test_labels, labels), pred)
    return {
        "system": "tfidf-1,2gram + OvR LinearSVC",
        "micro_f1": m["micro_f1"],
        "macro_f1": m["macro_f1"],
        "train_s": train_seconds,
        "predict_docs_s": len(test_texts) / predict_seconds,
    }


def doctags_row(cfg, config_path: str, skip: bool) -> dict:
    if not skip:
        started = time.time()
        assert doctags_main(["run", "--config", config_path]) == 0
        print(f"(doctags run took {time.time() - started:.0f}s)")
    report = json.load(open(os.path.join(cfg.eval_dir, "metrics_test.json")))
    summary = json.load(open(os.path.join(cfg.model_dir, "training_summary.json")))
    tagger = Tagger(cfg.export_dir)
    _, texts, _ = read_split(cfg.data_dir, "test")
    tagger.predict(texts[:256])  # warm-up
    started = time.time()
    tagger.predict(texts)
    docs_s = len(texts) / (time.time() - started)
    return {
        "system": f"doctags {cfg.model.family}",
        "micro_f1": report["metrics"]["micro_f1"],
        "macro_f1": report["metrics"]["macro_f1"],
        "train_s": summary["seconds"],
        "predict_docs_s": docs_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/reuters.yaml")
    parser.add_argument(
        "--skip-doctags",
        action="store_true",
        help="reuse the config's existing run instead of running it",
    )
    args = parser.parse_args()
    cfg = load_config(args.config)
    rows = [doctags_row(cfg, args.config, args.skip_doctags)]
    labels = Tagger(cfg.export_dir).labels
    rows.append(sklearn_baseline(cfg.data_dir, labels))
    print(format_table(rows, ["system", "micro_f1", "macro_f1", "train_s", "predict_docs_s"]))


if __name__ == "__main__":
    main()
