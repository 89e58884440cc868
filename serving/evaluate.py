"""Evaluate an exported model end to end on a split's raw text.

The test documents' raw text (kept in the TFRecords by the Beam job) goes
through the exported SavedModel exactly as a client's request would, so the
figures measure the artifact that is deployed, cleaning and threshold included.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from doctags_core import schema
from doctags_core.labels import multi_hot
from doctags_core.metrics import (
    format_table,
    per_label_report,
    ranking_metrics,
    summary_metrics,
    thresholds_by_label,
)
from serving.model import Tagger
from serving.report import render_report


def read_split(data_dir: str, split: str) -> tuple[list[str], list[str], list[list[str]]]:
    """``(ids, raw texts, label lists)`` of one split, streamed from the shards."""
    files = tf.io.gfile.glob(schema.split_pattern(data_dir, split))
    if not files:
        raise FileNotFoundError(f"no {split} shards under {data_dir}; run preprocess first")
    spec = schema.feature_spec(with_text=True)
    ids, texts, labels = [], [], []
    ds = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").batch(1024)
    for batch in ds.map(lambda s: tf.io.parse_example(s, spec)):
        ids += [x.decode("utf-8") for x in batch[schema.ID].numpy()]
        texts += [x.decode("utf-8") for x in batch[schema.TEXT].numpy()]
        labels += [[lb.decode("utf-8") for lb in row] for row in batch[schema.LABELS].to_list()]
    if texts and not any(texts):
        raise ValueError(f"{data_dir}: the records hold no raw text (preprocess.keep_raw_text)")
    return ids, texts, labels


def _train_label_counts(data_dir: str) -> dict[str, int]:
    path = os.path.join(data_dir, schema.METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        counts = json.load(f).get("label_counts", {})
    return {label: c.get("train", 0) for label, c in counts.items()}


def _model_thresholds(tagger: Tagger) -> list[float]:
    path = os.path.join(tagger.path, "assets", schema.THRESHOLDS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return thresholds_by_label(json.load(f), tagger.labels)


def evaluate(
    model_path: str, data_dir: str, out_dir: str, split: str = "test", html_report: bool = True
) -> dict:
    """Scores the exported model on ``split``; writes ``metrics_<split>.json`` and HTML.

    Decisions are the model's own (threshold inside the graph). Labels of
    the split that the model does not know are counted in
    ``unknown_label_assignments`` (they can only be missed).
    """
    tagger = Tagger(model_path)
    _, texts, label_lists = read_split(data_dir, split)
    y_true = multi_hot(label_lists, tagger.labels)
    y_pred, scores = tagger.predict_multi_hot(texts)
    known = set(tagger.labels)
    report = {
        "model": tagger.path,
        "split": split,
        "documents": len(texts),
        "labels": len(tagger.labels),
        "unknown_label_assignments": sum(1 for ls in label_lists for lb in ls if lb not in known),
        "metrics": summary_metrics(y_true, y_pred),
        "ranking": ranking_metrics(y_true, scores),
        "per_label": per_label_report(y_true, y_pred, tagger.labels, scores),
    }
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, f"metrics_{split}.json"), "w") as f:
        json.dump(report, f, indent=2)
    if html_report:
        page = render_report(
            report,
            y_true,
            scores,
            tagger.labels,
            _model_thresholds(tagger),
            _train_label_counts(data_dir),
        )
        with tf.io.gfile.GFile(os.path.join(out_dir, f"report_{split}.html"), "w") as f:
            f.write(page)
    return report


def format_report(report: dict, top: int = 20) -> str:
    """Summary metrics, then the per-label table of the most supported labels."""
    m = report["metrics"]
    rows = [
        {
            "average": avg,
            "precision": m[f"{avg}_precision"],
            "recall": m[f"{avg}_recall"],
            "f1": m[f"{avg}_f1"],
        }
        for avg in ("micro", "macro", "weighted", "samples")
    ]
    per_label = sorted(report["per_label"], key=lambda r: -r["support"])[:top]
    return (
        f"{report['split']} split: {report['documents']} documents, {report['labels']} labels\n"
        + format_table(rows, ["average", "precision", "recall", "f1"])
        + f"\nhamming loss {m['hamming_loss']:.4f}   subset accuracy {m['subset_accuracy']:.4f}"
        + "".join(f"   {k} {v:.4f}" for k, v in report.get("ranking", {}).items() if "_at_1" in k)
        + "\n\n"
        + f"per label (top {len(per_label)} by support):\n"
        + format_table(per_label, ["label", "precision", "recall", "f1", "support"])
    )
