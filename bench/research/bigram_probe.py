"""Issue-11 research probe: would word bigrams help the ``tfidf_mlp``?

    python bench/research/bigram_probe.py DATA_DIR [--variants uni20k,bi40k]

Reads a preprocessed ``DATA_DIR`` (the Beam job's train / validation / test
TFRecords and ``labels.txt``), fits a Keras ``TextVectorization`` in
``tf_idf`` mode on the train split's cleaned text (unigrams, or unigrams and
bigrams together, top ``max_tokens`` by frequency), and trains the
``tfidf_mlp`` shape with its candidate settings (512 hidden units, dropout
0.5 with 0.25 on the input, Adam 0.0005, batch 64, up to 15 epochs, early
stopping on validation PR-AUC, patience 3). One global threshold is chosen on
VALIDATION by micro-F1 + macro-F1; test is only reported.

A probe, not the product: the vocabulary and IDF come from Keras' ``adapt``
here, not from the Beam job's counts, and thresholds are global only (the
product also tries frequency-bucket thresholds). Compare its variants with
each other, not with `bench/quality.py`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from offline import f1s  # bench/research/offline.py, beside this script

from doctags_core.labels import multi_hot

VARIANTS = {  # name -> (TextVectorization ngrams, max_tokens)
    "uni20k": (None, 20000),
    "bi40k": (2, 40000),
    "bi60k": (2, 60000),
}


def read_split(data_dir: str, split: str) -> tuple[list[str], list[list[str]]]:
    """``(cleaned texts, label lists)`` of one split's TFRecords."""
    files = sorted(glob.glob(os.path.join(data_dir, split, "*.tfrecord.gz")))
    spec = {
        "clean_text": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64),
    }
    texts, labels = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        texts += [t.decode() for t in parsed["clean_text"].numpy()]
        labels += [[x.decode() for x in row] for row in parsed["labels"].to_list()]
    return texts, labels


def train_variant(name: str, splits: dict, names: list[str], seed: int = 0) -> dict:
    ngrams, max_tokens = VARIANTS[name]
    keras.utils.set_random_seed(seed)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (splits[s] for s in ("train", "validation", "test"))
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=None,
        split="whitespace",
        ngrams=ngrams,
        output_mode="tf_idf",
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(x_tr).batch(1024))

    def batches(x, y, shuffle=False):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed)
        return ds.batch(64).map(lambda t, labels: (vectorizer(t), labels)).prefetch(4)

    inputs = keras.Input((vectorizer.vocabulary_size(),))
    h = keras.layers.Dropout(0.25)(inputs)
    h = keras.layers.Dense(512, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(h)
    prior = np.clip(y_tr.mean(0), 1e-4, 1 - 1e-4)
    outputs = keras.layers.Dense(
        len(names),
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(np.log(prior / (1 - prior))),
    )(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(0.0005),
        "binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    started = time.time()
    history = model.fit(
        batches(x_tr, y_tr, shuffle=True),
        validation_data=batches(x_va, y_va),
        epochs=15,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                "val_pr_auc", mode="max", patience=3, restore_best_weights=True
            )
        ],
    )
    s_va = model.predict(batches(x_va, y_va), verbose=0)
    s_te = model.predict(batches(x_te, y_te), verbose=0)
    threshold = max(np.arange(0.05, 0.96, 0.05), key=lambda t: sum(f1s(y_va, s_va >= t)))
    micro, macro = f1s(y_te, s_te >= threshold)
    return {
        "variant": name,
        "vocabulary": vectorizer.vocabulary_size(),
        "epochs": len(history.history["loss"]),
        "best_val_pr_auc": round(max(history.history["val_pr_auc"]), 4),
        "threshold": round(float(threshold), 2),
        "test_micro_f1": round(micro, 4),
        "test_macro_f1": round(macro, 4),
        "seconds": round(time.time() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--variants", default="uni20k,bi40k")
    args = parser.parse_args()
    names = [
        line.split("\t")[0]
        for line in open(os.path.join(args.data_dir, "labels.txt"), encoding="utf-8")
        if line.strip()
    ]
    splits = {}
    for split in ("train", "validation", "test"):
        texts, labels = read_split(args.data_dir, split)
        splits[split] = (texts, multi_hot(labels, names).astype(np.float32))
    for name in args.variants.split(","):
        print(json.dumps(train_variant(name, splits, names)), flush=True)


if __name__ == "__main__":
    main()
