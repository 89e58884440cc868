"""Export ONE end-to-end SavedModel: raw strings in, scores and tag names out.

The serving graph is: shared TF cleaning -> whitespace split -> the same
TextVectorization as training -> the trained network -> threshold -> tag
names. Loading it needs TensorFlow only (no doctags code, no
tensorflow-text), so TF Serving, a notebook or `doctags serve` can all use it.

Besides the SavedModel itself the version directory carries what TF Serving
looks for next to it:

- ``assets.extra/tf_serving_warmup_requests``: ``PredictionLog`` TFRecords
  (tensorflow-serving-api protos) that TF Serving replays before it marks the
  version AVAILABLE, so the first real request does not pay for lazy
  initialisation (lookup tables, regex compilation, kernel selection).
- ``assets.extra/model_metadata.json``: what was exported and how (signatures
  with dtypes and shapes, label count, threshold, cleaning steps, TF version),
  for humans and deployment tooling; TF Serving's own GetModelMetadata answer
  comes from the SavedModel's signature defs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from doctags_core import schema
from doctags_core.cleaning import clean_text
from doctags_core.config import Config
from doctags_core.metrics import thresholds_by_label
from trainer import data as data_lib
from trainer.train import MODEL_FILE, THRESHOLDS_FILE

SIGNATURE = "serving_default"
TOKENIZE_SIGNATURE = "tokenize"
INPUT_NAME = "text"
OUTPUT_NAMES = ("scores", "tags", "tag_scores")
EXTRA_DIR = "assets.extra"  # TF Serving's fixed name, not tracked by the SavedModel
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's fixed name
METADATA_FILE = "model_metadata.json"

# Warmup texts exercise every cleaning branch (URL, HTML, entities,
# contractions, digits, non-Latin letters, empty input) so that every regex
# is compiled and every lookup table touched before the first real request.
WARMUP_TEXTS = (
    "Crude oil prices rose sharply after OPEC ministers agreed to cut output.",
    "<p>Shr 30 cts vs 25 cts &amp; net income up 12 pct, see http://example.com/q1</p>",
    "The company didn't say when it'll close the 1.5 billion dlr acquisition.",
    "Wheat and corn exports to the Soviet Union fell; Müller said prices weren't firm.",
    "",
)
# TF Serving replays each record once; a few batch sizes warm the shapes that
# dynamic batching will produce.
WARMUP_BATCH_SIZES = (1, 2, 5)


class TaggerModule(tf.Module):
    """The exported object: cleaning, vectorizing, scoring and tagging."""

    def __init__(self, model, vectorizer, labels, thresholds, cfg: Config, assets: list[str]):
        super().__init__(name="doctags")
        self.model = model
        self.vectorizer = vectorizer
        self.label_names = tf.constant(labels, dtype=tf.string)
        self.thresholds = tf.constant(thresholds, dtype=tf.float32)
        self.asset_files = [tf.saved_model.Asset(path) for path in assets]
        self._steps = tuple(cfg.cleaning.steps)
        self._always_top1 = cfg.threshold.always_top1

    def _token_ids(self, text):
        cleaned = clean_text(text, self._steps)
        return cleaned, self.vectorizer(cleaned)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, text):
        """Per-label ``scores`` plus ``tags``/``tag_scores`` sorted by score.

        ``tags`` is padded with "" (and ``tag_scores`` with 0) to the largest
        number of tags in the batch, so every output is a dense tensor that
        TF Serving's REST and gRPC APIs can return.
        """
        _, ids = self._token_ids(text)
        scores = tf.cast(self.model(ids, training=False), tf.float32)
        order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
        sorted_scores = tf.gather(scores, order, batch_dims=1)
        keep = sorted_scores >= tf.gather(self.thresholds, order)
        if self._always_top1:  # the best tag even when no score passes its threshold
            keep = tf.logical_or(keep, tf.equal(tf.range(tf.shape(keep)[1]), 0)[None, :])
        tags = tf.ragged.boolean_mask(tf.gather(self.label_names, order), keep)
        tag_scores = tf.ragged.boolean_mask(sorted_scores, keep)
        return {
            "scores": scores,
            "tags": tags.to_tensor(default_value=""),
            "tag_scores": tag_scores.to_tensor(default_value=0.0),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def tokenize(self, text):
        """The cleaned text and token ids the model sees (for skew checks)."""
        cleaned, ids = self._token_ids(text)
        return {"cleaned": cleaned, "token_ids": ids}


def warmup_requests(model_name: str) -> list[bytes]:
    """Serialized ``PredictionLog`` records for ``assets.extra``.

    The format is TF Serving's (``PredictionLog.predict_log.request``, a
    ``PredictRequest`` on ``serving_default``); building it from
    tensorflow-serving-api's own protos is what guarantees TF Serving parses it.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    records = []
    for size in WARMUP_BATCH_SIZES:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SIGNATURE
        texts = [WARMUP_TEXTS[i % len(WARMUP_TEXTS)] for i in range(size)]
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def _spec_json(spec: tf.TensorSpec) -> dict:
    return {"dtype": spec.dtype.name, "shape": [d if d is not None else -1 for d in spec.shape]}


def model_metadata(module: TaggerModule, cfg: Config, threshold: float, num_warmup: int) -> dict:
    """What was exported: signatures, labels, threshold, cleaning, versions."""
    signatures = {}
    for name, fn in ((SIGNATURE, module.serve), (TOKENIZE_SIGNATURE, module.tokenize)):
        concrete = fn.get_concrete_function()
        signatures[name] = {
            "inputs": {INPUT_NAME: _spec_json(concrete.structured_input_signature[0][0])},
            "outputs": {k: _spec_json(v) for k, v in concrete.structured_outputs.items()},
        }
    return {
        "model_name": cfg.export.model_name,
        "version": cfg.export.version,
        "exported_at_unix": int(time.time()),
        "tensorflow_version": tf.__version__,
        "signatures": signatures,
        "num_labels": int(module.label_names.shape[0]),
        "threshold": threshold,
        "per_label_thresholds": cfg.threshold.per_label,
        "always_top1": cfg.threshold.always_top1,
        "model_family": cfg.model.family,
        "tokenizer": cfg.model.tokenizer,
        "sequence_length": cfg.model.sequence_length,
        "cleaning_steps": list(cfg.cleaning.steps),
        "warmup_requests": num_warmup,
    }


def _write_extras(staging: str, module: TaggerModule, cfg: Config, threshold: float) -> None:
    extra = os.path.join(staging, EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    records = warmup_requests(cfg.export.model_name)
    with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record)
    with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), "w") as f:
        json.dump(model_metadata(module, cfg, threshold, len(records)), f, indent=2)


def _replay_warmup(staging: str) -> None:
    """Loads the staged SavedModel and runs its warmup requests, as TF Serving will.

    Raises:
        RuntimeError: if the model does not load or a warmup request fails,
            so a broken export is never renamed into place.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    serve = tf.saved_model.load(staging).signatures[SIGNATURE]
    path = os.path.join(staging, EXTRA_DIR, WARMUP_FILE)
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        texts = tf.make_ndarray(request.inputs[INPUT_NAME])
        out = serve(**{INPUT_NAME: tf.constant(texts)})
        if sorted(out) != sorted(OUTPUT_NAMES) or out["scores"].shape[0] != len(texts):
            raise RuntimeError(f"{staging}: warmup request returned {out}")


def read_thresholds(model_dir: str, labels: list[str]) -> tuple[float, list[float]]:
    """The global threshold and one threshold per label, in label order."""
    with tf.io.gfile.GFile(os.path.join(model_dir, THRESHOLDS_FILE)) as f:
        saved = json.load(f)
    return float(saved["threshold"]), thresholds_by_label(saved, labels)


def export_model(cfg: Config, overwrite: bool = False) -> str:
    """Writes the SavedModel to ``cfg.export_dir`` and returns that path.

    The version directory (SavedModel, assets, ``assets.extra`` warmup and
    metadata) is written under a temporary name, checked by replaying its
    warmup requests, and renamed into place, so a server watching the base
    path never sees half a model nor a model that cannot answer.

    Raises:
        FileExistsError: if the version exists and ``overwrite`` is False.
    """
    target = cfg.export_dir
    if tf.io.gfile.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; raise export.version or pass --overwrite")
    model = keras.models.load_model(os.path.join(cfg.model_dir, MODEL_FILE))
    labels = data_lib.load_labels(cfg.data_dir)
    threshold, per_label = read_thresholds(cfg.model_dir, labels)
    assets = [
        os.path.join(cfg.data_dir, schema.LABELS_FILE),
        os.path.join(cfg.data_dir, schema.VOCAB_FILE),
        os.path.join(cfg.model_dir, THRESHOLDS_FILE),
        os.path.join(cfg.model_dir, "config.yaml"),
    ]
    if cfg.model.tokenizer == "wordpiece":
        assets.append(os.path.join(cfg.model_dir, data_lib.WORDPIECE_VOCAB_FILE))
    vectorizer = data_lib.make_model_vectorizer(cfg)
    module = TaggerModule(model, vectorizer, labels, per_label, cfg, assets)
    parent = os.path.dirname(target)
    tf.io.gfile.makedirs(parent)
    # A leading dot: TF Serving and `doctags serve` only consider numeric names.
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                SIGNATURE: module.serve,
                TOKENIZE_SIGNATURE: module.tokenize,
            },
        )
        _write_extras(staging, module, cfg, threshold)
        _replay_warmup(staging)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from a server's user
        if tf.io.gfile.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return target
