"""Quality benchmark: doctags configurations vs TF-IDF + LinearSVC and fastText.

    pip install -e ".[dev,bench]"     # the bench extra brings fastText (fasttext-numpy2)
    python bench/quality.py --config configs/reuters.yaml [--variants cnn,dnn] [--input GLOB]
        [--split-field split|none] [--work /tmp/quality] [--reuse] [--no-fasttext]

The corpus is preprocessed ONCE by the Beam job; every doctags variant (a set
of config overrides, see VARIANTS) is trained, exported and evaluated on the
exported SavedModel. Two baselines run in the same process on the same
splits and label set, from the raw text the records keep:

- TF-IDF (1-2 grams) + OneVsRest(LinearSVC), scikit-learn, fitted on
  train + validation (it has no threshold to tune);
- fastText one-vs-all (``-loss ova -wordNgrams 2 -epoch 50``), fitted on
  train, its threshold tuned on validation, the split doctags tunes on.

One table: micro-F1, macro-F1, train seconds, predict docs/s (raw strings
through the exported model at batch 256; the baselines' own predict).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doctags.cli import main as doctags_main
from doctags_core.data_files import read_split
from doctags_core.labels import multi_hot
from doctags_core.metrics import format_table, summary_metrics
from doctags_core.tagger import Tagger

# name -> config overrides; every variant starts from the --config file.
VARIANTS: dict[str, dict] = {
    # The default: the --config file as it is (model.family auto in the shipped configs).
    "default": {},
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


def tfidf_linearsvc(
    train_texts: list[str],
    train_labels: list[list[str]],
    test_texts: list[str],
    test_labels: list[list[str]],
    labels: list[str] | None = None,
) -> dict:
    """TF-IDF (1-2 grams, sublinear tf) + one LinearSVC per label, on raw text.

    Plain texts and label-name lists in, so it runs (and is tested) without a
    Beam job. Labels are binarised by scikit-learn's own MultiLabelBinarizer
    (int64; an int8 indicator breaks OneVsRestClassifier beyond 127 labels),
    over ``labels`` (default: the train labels); test labels outside it are
    ignored, as the doctags evaluator ignores labels its model does not know.
    A label without a train positive gets a constant "no" (OneVsRest's own
    handling). Metrics over the whole label set, as `summary_metrics` does.

    Returns:
        ``system``, ``micro_f1``, ``macro_f1``, ``train_s`` (vectorize + fit)
        and ``predict_docs_s`` (vectorize + predict the test texts).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer
    from sklearn.svm import LinearSVC

    with warnings.catch_warnings():
        # Expected: test labels outside the label set, labels without positives.
        warnings.simplefilter("ignore", UserWarning)
        binarizer = MultiLabelBinarizer(classes=labels)
        y_train = binarizer.fit_transform(train_labels)
        y_test = binarizer.transform(test_labels)
        started = time.time()
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
        x = vectorizer.fit_transform(train_texts)
        clf = OneVsRestClassifier(LinearSVC(C=1.0, random_state=0)).fit(x, y_train)
        train_seconds = time.time() - started
        started = time.time()
        pred = clf.predict(vectorizer.transform(test_texts))
        predict_seconds = time.time() - started
    m = summary_metrics(y_test, pred)
    return {
        "system": "sklearn tfidf(1,2) + OvR LinearSVC",
        "micro_f1": m["micro_f1"],
        "macro_f1": m["macro_f1"],
        "train_s": train_seconds,
        "predict_docs_s": len(test_texts) / max(predict_seconds, 1e-9),
    }


# fastText's usual multi-label recipe (one-vs-all sigmoids, word bigrams), with
# the epochs of its strong supervised settings; not tuned per corpus.
FASTTEXT_PARAMS = {
    "loss": "ova",
    "wordNgrams": 2,
    "epoch": 50,
    "lr": 0.5,
    "dim": 100,
    "minCount": 1,
    "bucket": 2_000_000,
    "thread": 2,
    "verbose": 0,
}
_FT_GRID = (0.01, 0.99, 0.01)


def fasttext_tokens(text: str) -> str:
    """fastText's usual preprocessing: lower case, punctuation split off, one line."""
    return " ".join(re.sub(r"([^\w\s])", r" \1 ", text.lower()).split())


def _fasttext_scores(model, texts: list[str], index: dict[str, int], n_labels: int):
    """Every label's ova probability for every text (``k=-1``, no threshold)."""
    import numpy as np

    scores = np.zeros((len(texts), n_labels), dtype=np.float32)
    names, probs = model.predict([fasttext_tokens(t) for t in texts], k=-1, threshold=0.0)
    for row, (ns, ps) in enumerate(zip(names, probs)):
        for name, p in zip(ns, ps):
            column = index.get(name)
            if column is not None:
                scores[row, column] = p
    return scores


def fasttext_ova(
    train_texts: list[str],
    train_labels: list[list[str]],
    validation_texts: list[str],
    validation_labels: list[list[str]],
    test_texts: list[str],
    test_labels: list[list[str]],
    labels: list[str] | None = None,
    params: dict | None = None,
) -> dict:
    """fastText one-vs-all, fitted on train, its global threshold tuned on VALIDATION.

    The threshold maximises validation micro-F1 over 0.01..0.99 (the metric
    doctags' default sweep uses); test is only scored. Labels as in
    `tfidf_linearsvc`. Needs the ``bench`` extra (``fasttext-numpy2``; see
    pyproject.toml for why not ``fasttext-wheel``).

    Returns:
        As `tfidf_linearsvc`, plus ``threshold`` and the validation
        ``val_micro_f1`` / ``val_macro_f1``.
    """
    import tempfile

    import fasttext
    import numpy as np

    from doctags_core.metrics import apply_thresholds, sweep_threshold, threshold_grid

    labels = labels or sorted({lb for ls in train_labels for lb in ls})
    # fastText labels are whitespace-free tokens: map each name to a safe one.
    tokens = {lb: "__label__" + re.sub(r"\s", "_", lb) for lb in labels}
    index = {tokens[lb]: i for i, lb in enumerate(labels)}
    y_val = multi_hot(validation_labels, labels)
    y_test = multi_hot(test_labels, labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        started = time.time()
        with open(path, "w", encoding="utf-8") as f:
            for text, ls in zip(train_texts, train_labels):
                names = " ".join(tokens[lb] for lb in ls if lb in tokens)
                f.write(f"{names} {fasttext_tokens(text)}\n")
        model = fasttext.train_supervised(path, **{**FASTTEXT_PARAMS, **(params or {})})
        train_seconds = time.time() - started
    s_val = _fasttext_scores(model, validation_texts, index, len(labels))
    threshold, _ = sweep_threshold(y_val, s_val, threshold_grid(*_FT_GRID), "micro_f1")
    val = summary_metrics(y_val, apply_thresholds(s_val, [threshold] * len(labels)))
    started = time.time()
    names, _ = model.predict([fasttext_tokens(t) for t in test_texts], k=-1, threshold=threshold)
    predict_seconds = time.time() - started
    pred = np.zeros_like(y_test)
    for row, ns in enumerate(names):
        for name in ns:
            if name in index:
                pred[row, index[name]] = 1
    m = summary_metrics(y_test, pred)
    return {
        "system": "fastText ova (wordNgrams 2, 50 epochs)",
        "micro_f1": m["micro_f1"],
        "macro_f1": m["macro_f1"],
        "train_s": train_seconds,
        "predict_docs_s": len(test_texts) / max(predict_seconds, 1e-9),
        "threshold": threshold,
        "val_micro_f1": val["micro_f1"],
        "val_macro_f1": val["macro_f1"],
    }


def baselines(data_dir: str, labels: list[str], with_fasttext: bool = True) -> list[dict]:
    """Both baselines on the preprocessed splits (raw text kept by the Beam job).

    LinearSVC, which has no threshold to tune, fits train + validation (as
    doctags' model sees train, and validation only picks its threshold and
    epoch); fastText fits train and tunes its threshold on validation.
    """
    splits = {s: read_split(data_dir, s)[1:] for s in ("train", "validation", "test")}
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (
        splits["train"],
        splits["validation"],
        splits["test"],
    )
    rows = [tfidf_linearsvc(tr_x + va_x, tr_y + va_y, te_x, te_y, labels)]
    if with_fasttext:
        rows.append(fasttext_ova(tr_x, tr_y, va_x, va_y, te_x, te_y, labels))
    return rows


def run_variant(name: str, overrides: dict, base: list[str], work: str, data_dir: str) -> dict:
    """Trains, exports and evaluates one variant on the shared preprocessed data."""
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "data")
    if not os.path.exists(link):
        os.symlink(data_dir, link)
    args = [*base, *_sets({**overrides, "output_dir": out})]
    for command in (["train"], ["export", "--overwrite"], ["evaluate"]):  # all on one config
        if doctags_main([command[0], *args, *command[1:]]) != 0:
            raise SystemExit(f"variant {name}: doctags {command[0]} failed")
    report = json.load(open(os.path.join(out, "eval", "metrics_test.json")))
    summary = json.load(open(os.path.join(out, "model", "training_summary.json")))
    chosen = (
        f" ({summary['chosen']}, {summary['policy']} thresholds)" if "chosen" in summary else ""
    )
    tagger = Tagger(report["model"])
    _, texts, _ = read_split(data_dir, "test")
    tagger.predict(texts[:256])  # warm-up: trace and load before timing
    started = time.time()
    tagger.predict(texts)
    return {
        "system": f"doctags {name}{chosen}",
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
    parser.add_argument("--variants", default="default")
    parser.add_argument("--work", default="/tmp/doctags-quality")
    parser.add_argument("--reuse", action="store_true", help="keep preprocessed data if present")
    parser.add_argument(
        "--no-fasttext", action="store_true", help="skip the fastText row (no bench extra)"
    )
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
        # The baselines train on the train split's raw text, which the job
        # keeps only on request (preprocess.raw_text_splits).
        every_split = {
            "output_dir": shared,
            "preprocess.raw_text_splits": ["train", "validation", "test"],
        }
        if doctags_main(["preprocess", *base, *_sets(every_split)]) != 0:
            raise SystemExit("preprocess failed")
        print(f"(preprocess: {time.time() - started:.0f}s)")
    rows = []
    for variant in args.variants.split(","):
        rows.append(run_variant(variant, VARIANTS[variant], base, args.work, data_dir))
        print("row:", json.dumps(rows[-1]), flush=True)  # a long run keeps what it finished
    labels = [line.strip() for line in open(os.path.join(data_dir, "labels.txt")) if line.strip()]
    for row in baselines(data_dir, labels, with_fasttext=not args.no_fasttext):
        rows.append(row)
        print("row:", json.dumps(row), flush=True)
    print()
    print(format_table(rows, ["system", "micro_f1", "macro_f1", "train_s", "predict_docs_s"]))


if __name__ == "__main__":
    main()
