"""bench/quality.py's baselines against an independent scikit-learn pipeline.

Issue 16: an int8 indicator (what `multi_hot` used to return) makes
scikit-learn 1.9.1's OneVsRestClassifier fit columns to the wrong labels
once there are more than 127 of them. The corpus here has > 200 labels.
"""

import os
import tempfile
import warnings

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from doctags_core.labels import multi_hot
from doctags_core.splits import assign_split
from doctags_core.synth import SynthSpec, generate_shard
from tests.conftest import bench_module


def _quality():
    return bench_module("quality")


@pytest.fixture(scope="module")
def corpus():
    """~1,500 short synthetic documents over 240 labels, split by id hash."""
    spec = SynthSpec(
        documents=1500, labels=240, mean_words=40, label_exponent=0.6, topic_share=0.4, seed=5
    )
    split = {"train": ([], []), "validation": ([], []), "test": ([], [])}
    for doc in generate_shard(spec, 0):
        texts, labels = split[assign_split(doc["id"], None, 0.1, 0.2)]
        texts.append(doc["text"])
        labels.append(doc["labels"])
    return split


@pytest.fixture(scope="module")
def reference(corpus):
    """The plain pipeline fitted on train + validation, predicting test."""
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (
        corpus["train"],
        corpus["validation"],
        corpus["test"],
    )
    return _reference(tr_x + va_x, tr_y + va_y, te_x, te_y)


def _reference(train_texts, train_labels, test_texts, test_labels):
    binarizer = MultiLabelBinarizer()
    y_train = binarizer.fit_transform(train_labels)
    with warnings.catch_warnings():  # a test label unseen in train is ignored
        warnings.simplefilter("ignore", UserWarning)
        y_test = binarizer.transform(test_labels)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    clf = OneVsRestClassifier(LinearSVC(C=1.0, random_state=0))
    clf.fit(vectorizer.fit_transform(train_texts), y_train)
    pred = clf.predict(vectorizer.transform(test_texts))
    return binarizer.classes_, y_test, pred


def test_linearsvc_baseline_matches_a_plain_scikit_learn_pipeline(corpus, reference):
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (
        corpus["train"],
        corpus["validation"],
        corpus["test"],
    )
    train_x, train_y = tr_x + va_x, tr_y + va_y
    classes, y_test, pred = reference
    assert len(classes) > 200
    row = _quality().tfidf_linearsvc(train_x, train_y, te_x, te_y)
    micro = f1_score(y_test, pred, average="micro", zero_division=0)
    macro = f1_score(y_test, pred, average="macro", zero_division=0)
    assert abs(row["micro_f1"] - micro) < 1e-9
    assert abs(row["macro_f1"] - macro) < 1e-9
    assert micro > 0.3  # the labels are learnable: not the int8 garbage (~0.0)


def test_multi_hot_output_is_safe_for_one_vs_rest(corpus, reference):
    """The global fix: multi_hot's own matrix gives OneVsRest the reference fit."""
    (tr_x, tr_y), (va_x, va_y), te_x = corpus["train"], corpus["validation"], corpus["test"][0]
    tr_x, tr_y = tr_x + va_x, tr_y + va_y
    classes, y_test, expected = reference
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    y = multi_hot(tr_y, list(classes))
    assert y.dtype == np.int32 and y.shape[1] > 200
    clf = OneVsRestClassifier(LinearSVC(C=1.0, random_state=0))
    pred = clf.fit(vectorizer.fit_transform(tr_x), y).predict(vectorizer.transform(te_x))
    np.testing.assert_array_equal(pred, expected)
    # What the old int8 matrix did to the same fit: columns >= 128 on wrong labels.
    broken = OneVsRestClassifier(LinearSVC(C=1.0, random_state=0))
    broken.fit(vectorizer.transform(tr_x), y.astype(np.int8))
    garbage = broken.predict(vectorizer.transform(te_x))
    assert f1_score(y_test, garbage, average="micro") < f1_score(y_test, pred, average="micro")


def test_fasttext_baseline_tunes_on_validation_only(corpus):
    pytest.importorskip("fasttext")
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (
        corpus["train"],
        corpus["validation"],
        corpus["test"],
    )
    labels = sorted({lb for ls in tr_y for lb in ls})
    row = _quality().fasttext_ova(
        tr_x,
        tr_y,
        va_x,
        va_y,
        te_x,
        te_y,
        labels,
        params={"epoch": 5, "thread": 1, "bucket": 100_000},
    )
    assert 0.01 <= row["threshold"] <= 0.99
    assert 0.0 < row["micro_f1"] <= 1.0 and 0.0 < row["val_micro_f1"] <= 1.0
    assert row["predict_docs_s"] > 0


def test_fasttext_scores_differ_per_label(corpus):
    """fasttext-wheel 0.9.2 on numpy 2 gave every label of a line the top probability."""
    fasttext = pytest.importorskip("fasttext")
    quality = _quality()
    (tr_x, tr_y), (te_x, _) = corpus["train"], corpus["test"]
    labels = sorted({lb for ls in tr_y for lb in ls})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w") as f:
            for text, ls in zip(tr_x, tr_y):
                names = " ".join("__label__" + lb for lb in ls)
                f.write(f"{names} {quality.fasttext_tokens(text)}\n")
        params = {**quality.FASTTEXT_PARAMS, "epoch": 5, "thread": 1, "bucket": 100_000}
        model = fasttext.train_supervised(path, **params)
    index = {"__label__" + lb: i for i, lb in enumerate(labels)}
    scores = quality._fasttext_scores(model, te_x[:20], index, len(labels))
    top3 = -np.sort(-scores, axis=1)[:, :3]
    assert (top3[:, 0] > top3[:, 2]).all()
    single = model.f.predict(quality.fasttext_tokens(te_x[0]) + "\n", 3, 0.0, "strict")
    np.testing.assert_allclose(top3[0], [p for p, _ in single], rtol=1e-6)
