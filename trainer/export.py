"""Export ONE end-to-end SavedModel: raw strings in, scores and tag names out.

The serving graph is: shared TF cleaning -> whitespace split -> the same
TextVectorization as training -> the trained network -> threshold -> tag
names. Loading it needs TensorFlow only (no doctags code; tensorflow-text
only for WordPiece models), so TF Serving, a notebook or `doctags serve` can
all use it. Names and file layout are `doctags_core.export_contract`'s.

The graph is written with Keras' `ExportArchive`, which tracks the model's
and the vectorizer's variables and lookup tables itself. A `tf.Module`
holding the Keras model and saved with ``tf.saved_model.save`` loads in
Python but not in TF Serving: its restore op fills other variable handles
than the ones the signatures read ("Could not find variable ...",
keras-team/keras#20095). Before a version is published it is loaded with
the session-based loader TF Serving uses and its warmup requests are
replayed there (`doctags_core.session_model`).

Besides the SavedModel the version directory carries what TF Serving looks
for next to it:

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
import time

import keras
import tensorflow as tf

from doctags_core import data_files, schema, version_publish
from doctags_core import export_contract as contract
from doctags_core.atomic_files import atomic_write_json
from doctags_core.cleaning import clean_text
from doctags_core.config import Config, ConfigError
from doctags_core.metrics import thresholds_by_label
from doctags_core.session_model import SessionModel
from trainer import data as data_lib
from trainer import losses as _losses  # noqa: F401 - registers the losses model.keras names
from trainer import models as _models  # noqa: F401 - registers the layers model.keras names
from trainer.members import Member, describe, members_of
from trainer.outputs import (
    CONFIG_FILE,
    MODEL_FILE,
    THRESHOLDS_FILE,
    WORDPIECE_VOCAB_FILE,
    model_path,
)

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

_TEXT_SPEC = tf.TensorSpec([None], tf.string, name=contract.INPUT_NAME)


def tag_outputs(scores, label_names, thresholds, always_top1: bool) -> dict:
    """``scores`` plus ``tags``/``tag_scores`` sorted by score, padded to dense tensors.

    ``tags`` is padded with "" (and ``tag_scores`` with 0) to the largest
    number of tags in the batch, so every output is a dense tensor that
    TF Serving's REST and gRPC APIs can return.
    """
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
    sorted_scores = tf.gather(scores, order, batch_dims=1)
    keep = sorted_scores >= tf.gather(thresholds, order)
    if always_top1:  # the best tag even when no score passes its threshold
        keep = tf.logical_or(keep, tf.equal(tf.range(tf.shape(keep)[1]), 0)[None, :])
    tags = tf.ragged.boolean_mask(tf.gather(label_names, order), keep)
    return {
        "scores": scores,
        "tags": tags.to_tensor(default_value=""),
        "tag_scores": tf.ragged.boolean_mask(sorted_scores, keep).to_tensor(default_value=0.0),
    }


def _track(archive: keras.export.ExportArchive, model, vectorizer) -> None:
    """Tracks one member's variables and lookup tables in the archive."""
    archive.track(model)
    if not vectorizer.built:  # a vocabulary-only layer builds on its first call
        vectorizer(tf.constant([""]))
    archive.track(vectorizer)
    splitter = getattr(vectorizer, "wordpiece_splitter", None)
    if splitter is not None:  # its lookup table is not a Keras variable
        archive.track(splitter)


def build_archive(
    members: list[tuple[keras.Model, keras.layers.Layer, float]],
    labels: list[str],
    thresholds: list[float],
    steps: tuple[str, ...],
    always_top1: bool,
) -> tuple[keras.export.ExportArchive, dict]:
    """The serving and tokenize endpoints over the tracked members.

    Args:
        members: ``(model, vectorizer, weight)`` of each model served; the
            served scores are the weighted sum of theirs (one model: weight 1).
        labels: Output column names.
        thresholds: One threshold per label.
        steps: The cleaning steps the data was made with.
        always_top1: Always return the best tag.

    Returns:
        The archive and ``{signature name: tf.function}`` of its endpoints.
        ``tokenize`` returns the first member's model input.
    """
    archive = keras.export.ExportArchive()
    for model, vectorizer, _ in members:
        _track(archive, model, vectorizer)
    label_names = tf.constant(labels, dtype=tf.string)
    per_label = tf.constant(thresholds, dtype=tf.float32)

    def serve(text):
        cleaned = clean_text(text, steps)
        scores = tf.add_n(
            [
                weight * tf.cast(model(vectorizer(cleaned), training=False), tf.float32)
                for model, vectorizer, weight in members
            ]
        )
        return tag_outputs(scores, label_names, per_label, always_top1)

    def tokenize(text):
        cleaned = clean_text(text, steps)
        return {"cleaned": cleaned, "token_ids": members[0][1](cleaned)}

    endpoints = {
        contract.SIGNATURE: archive.add_endpoint(contract.SIGNATURE, serve, [_TEXT_SPEC]),
        contract.TOKENIZE_SIGNATURE: archive.add_endpoint(
            contract.TOKENIZE_SIGNATURE, tokenize, [_TEXT_SPEC]
        ),
    }
    return archive, endpoints


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
        request.model_spec.signature_name = contract.SIGNATURE
        texts = [WARMUP_TEXTS[i % len(WARMUP_TEXTS)] for i in range(size)]
        request.inputs[contract.INPUT_NAME].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def _spec_json(spec: tf.TensorSpec) -> dict:
    return {"dtype": spec.dtype.name, "shape": [d if d is not None else -1 for d in spec.shape]}


def model_metadata(
    endpoints: dict,
    cfg: Config,
    members: list[Member],
    num_labels: int,
    threshold: float,
    threshold_policy: str,
    num_warmup: int,
) -> dict:
    """What was exported: signatures, labels, threshold, cleaning, versions."""
    signatures = {}
    for name, fn in endpoints.items():
        concrete = fn.get_concrete_function()
        signatures[name] = {
            "inputs": {contract.INPUT_NAME: _spec_json(concrete.structured_input_signature[0][0])},
            "outputs": {k: _spec_json(v) for k, v in concrete.structured_outputs.items()},
        }
    return {
        "model_name": cfg.export.model_name,
        "version": cfg.export.version,
        "exported_at_unix": int(time.time()),
        "tensorflow_version": tf.__version__,
        "tf_serving_version": contract.TF_SERVING_VERSION,
        "signatures": signatures,
        "num_labels": num_labels,
        "threshold": threshold,
        "per_label_thresholds": threshold_policy == "per_label",
        "always_top1": cfg.threshold.always_top1,
        "model_family": describe(members),
        "members": [
            {
                "name": m.name,
                "family": m.cfg.model.family,
                "tokenizer": m.cfg.model.tokenizer,
                "sequence_length": m.cfg.model.sequence_length,
                "weight": m.weight,
            }
            for m in members
        ],
        "cleaning_steps": list(cfg.cleaning.steps),
        "warmup_requests": num_warmup,
    }


def _write_extras(staging: str, metadata: dict, records: list[bytes]) -> None:
    extra = os.path.join(staging, contract.EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    with tf.io.TFRecordWriter(contract.warmup_path(staging)) as writer:
        for record in records:
            writer.write(record)
    atomic_write_json(os.path.join(extra, contract.METADATA_FILE), metadata)


def _copy_assets(staging: str, files: dict[str, str]) -> None:
    """Copies ``{asset name: source path}`` into ``assets/`` for humans and readers."""
    tf.io.gfile.makedirs(os.path.join(staging, contract.ASSETS_DIR))
    for name, source in files.items():
        tf.io.gfile.copy(source, contract.asset_path(staging, name), overwrite=True)


def verify_in_session(version_dir: str) -> int:
    """Loads the version as TF Serving does and replays its warmup; returns the count.

    Raises:
        RuntimeError: naming the version and the loader's message, so a
            version TF Serving cannot run is never published.
    """
    try:
        with SessionModel(version_dir) as session:
            replayed = session.replay_warmup()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"{version_dir}: TF Serving's session loader cannot run this export: {first}"
        ) from e
    if replayed != len(WARMUP_BATCH_SIZES):
        raise RuntimeError(f"{version_dir}: replayed {replayed} warmup requests")
    return replayed


def read_thresholds(model_dir: str, labels: list[str]) -> tuple[float, list[float], str]:
    """The global threshold, one threshold per label in label order, and the policy."""
    with tf.io.gfile.GFile(model_path(model_dir, THRESHOLDS_FILE)) as f:
        saved = json.load(f)
    policy = "per_label" if saved.get("per_label") else "global"
    return float(saved["threshold"]), thresholds_by_label(saved, labels), policy


def check_training_outputs(cfg: Config, members: list[Member] | None = None) -> None:
    """Fails early, and says why, when training has not finished writing its outputs.

    Training publishes ``model.keras`` and ``thresholds.json`` atomically at its
    very end (auto selection: each member's model, then the thresholds), so a
    missing file means a run that has not finished (or was killed): Keras'
    own "File not found" would not say so.

    Raises:
        FileNotFoundError: naming the missing file and the command to run.
    """
    paths = [model_path(cfg.model_dir, THRESHOLDS_FILE)]
    paths += [model_path(m.cfg.model_dir, MODEL_FILE) for m in members or members_of(cfg)]
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: no finished training run in {cfg.model_dir}; run "
                "`doctags train` (a run killed before its end resumes from its backup)"
            )


def data_cleaning_steps(cfg: Config) -> tuple[str, ...]:
    """The cleaning steps the data was made with, checked against the config.

    The export must clean raw text exactly as the Beam job cleaned the
    training data; the steps come from the preprocess metadata, and a config
    that says otherwise is refused rather than exported with skew.

    Raises:
        ConfigError: naming both lists when they differ.
    """
    steps = tuple(data_files.read_metadata(cfg.data_dir)["cleaning_steps"])
    if steps != tuple(cfg.cleaning.steps):
        raise ConfigError(
            f"cleaning.steps: the config says {list(cfg.cleaning.steps)} but the data in "
            f"{cfg.data_dir} was made with {list(steps)}; run preprocess again or restore "
            "the config's steps"
        )
    return steps


def export_model(cfg: Config, overwrite: bool = False) -> str:
    """Writes the SavedModel to ``cfg.export_dir`` and returns that path.

    The version directory (SavedModel, assets, ``assets.extra`` warmup and
    metadata) is written under a hidden staging name, loaded with TF
    Serving's session-based loader and its warmup replayed there, and only
    then published (`doctags_core.version_publish`): renamed into place, or
    exchanged with the version it replaces in one system call, so a server
    watching the base path never sees half a model, a model that cannot
    answer, or no version at all. Staging folders of killed exports and the
    version the previous export replaced are removed first.

    Raises:
        FileExistsError: if the version exists and ``overwrite`` is False
            (before any work; the message names both ways on).
        FileNotFoundError: if training has not written its outputs.
        ConfigError: if the config's cleaning differs from the data's.
        RuntimeError: if the session loader cannot run the export.
    """
    target = cfg.export_dir
    conflict = version_publish.conflict_message(target)
    if conflict and not overwrite:
        raise FileExistsError(conflict)
    steps = data_cleaning_steps(cfg)
    members = members_of(cfg)
    check_training_outputs(cfg, members)
    labels = data_files.load_labels(cfg.data_dir)
    threshold, per_label, policy = read_thresholds(cfg.model_dir, labels)
    assets = {
        contract.LABELS_ASSET: os.path.join(cfg.data_dir, schema.LABELS_FILE),
        schema.VOCAB_FILE: os.path.join(cfg.data_dir, schema.VOCAB_FILE),
        contract.THRESHOLDS_ASSET: model_path(cfg.model_dir, THRESHOLDS_FILE),
        contract.CONFIG_ASSET: model_path(cfg.model_dir, CONFIG_FILE),
    }
    for m in members:
        if m.cfg.model.tokenizer == "wordpiece":
            name = WORDPIECE_VOCAB_FILE if len(members) == 1 else f"{m.name}_{WORDPIECE_VOCAB_FILE}"
            assets[name] = model_path(m.cfg.model_dir, WORDPIECE_VOCAB_FILE)
    loaded = [
        (
            keras.models.load_model(model_path(m.cfg.model_dir, MODEL_FILE)),
            data_lib.make_model_vectorizer(m.cfg),
            m.weight,
        )
        for m in members
    ]
    archive, endpoints = build_archive(loaded, labels, per_label, steps, cfg.threshold.always_top1)
    base_path = os.path.dirname(target)
    version_publish.remove_leftovers(base_path)
    staging = version_publish.staging_dir(base_path)
    try:
        archive.write_out(staging, verbose=False)
        _copy_assets(staging, assets)
        records = warmup_requests(cfg.export.model_name)
        metadata = model_metadata(
            endpoints, cfg, members, len(labels), threshold, policy, len(records)
        )
        _write_extras(staging, metadata, records)
        verify_in_session(staging)
        version_publish.publish_version(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # unpublished: nothing refers to it
        raise
    return target
