"""The TF Serving-ready export: layout, warmup records, metadata, and the op set."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import opset
from trainer import export as export_lib


def test_version_directory_layout_is_what_tf_serving_expects(serving_export):
    cfg = serving_export
    base = os.path.dirname(cfg.export_dir)
    assert os.path.basename(base) == cfg.export.model_name
    # Only the numbered version is left: the staging directory was renamed away.
    assert os.listdir(base) == [str(cfg.export.version)]
    for path in (
        "saved_model.pb",
        "variables/variables.index",
        "assets/labels.txt",
        "assets.extra/tf_serving_warmup_requests",
        "assets.extra/model_metadata.json",
    ):
        assert os.path.exists(os.path.join(cfg.export_dir, path)), path
    assert os.stat(cfg.export_dir).st_mode & 0o755 == 0o755


def test_warmup_records_are_tf_serving_prediction_logs(serving_export):
    path = os.path.join(serving_export.export_dir, "assets.extra", "tf_serving_warmup_requests")
    records = [
        prediction_log_pb2.PredictionLog.FromString(raw)
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator()
    ]
    assert len(records) == len(export_lib.WARMUP_BATCH_SIZES)
    serve = tf.saved_model.load(serving_export.export_dir).signatures["serving_default"]
    for record, size in zip(records, export_lib.WARMUP_BATCH_SIZES):
        assert record.WhichOneof("log_type") == "predict_log"
        request = record.predict_log.request
        assert request.model_spec.name == serving_export.export.model_name
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["text"]
        assert request.inputs["text"].dtype == tf.string.as_datatype_enum
        texts = tf.make_ndarray(request.inputs["text"])
        assert texts.shape == (size,)
        out = serve(text=tf.constant(texts))
        assert out["scores"].shape[0] == size


def test_model_metadata_describes_the_signatures(serving_export):
    cfg = serving_export
    meta = json.load(open(os.path.join(cfg.export_dir, "assets.extra", "model_metadata.json")))
    labels = open(os.path.join(cfg.export_dir, "assets", "labels.txt")).read().split()
    assert meta["model_name"] == cfg.export.model_name and meta["version"] == cfg.export.version
    assert meta["tensorflow_version"] == tf.__version__
    assert meta["num_labels"] == len(labels)
    threshold = json.load(open(os.path.join(cfg.model_dir, "thresholds.json")))["threshold"]
    assert meta["threshold"] == pytest.approx(threshold)
    serving = meta["signatures"]["serving_default"]
    assert serving["inputs"] == {"text": {"dtype": "string", "shape": [-1]}}
    assert serving["outputs"]["scores"] == {"dtype": "float32", "shape": [-1, len(labels)]}
    assert serving["outputs"]["tags"] == {"dtype": "string", "shape": [-1, -1]}
    assert set(meta["signatures"]["tokenize"]["outputs"]) == {"cleaned", "token_ids"}
    assert meta["cleaning_steps"] == list(cfg.cleaning.steps)


def test_every_serving_op_exists_in_tf_serving_2_20(serving_export):
    ops = opset.saved_model_ops(serving_export.export_dir)
    # Not vacuous: the graph and its functions were read, cleaning and lookups included.
    assert {"StaticRegexReplace", "LookupTableFindV2", "MatMul", "Sigmoid"} <= ops
    assert len(ops) > 30
    assert opset.unsupported_ops(serving_export.export_dir) == []
    assert not ops & opset.load_allowlist()["tensorflow-text"]


def test_op_allowlist_is_tf_serving_2_20s_and_not_todays_tensorflow():
    allowed = opset.load_allowlist()
    assert set(allowed) == {"core", "tensorflow-text"}
    core, text = allowed["core"], allowed["tensorflow-text"]
    assert len(core) > 1000 and {"StringSplitV2", "StaticRegexReplace", "HashTableV2"} <= core
    # DecodeJxl was added in TensorFlow 2.21: TF Serving 2.20 cannot run it.
    assert "DecodeJxl" not in core and tf.raw_ops.DecodeJxl is not None
    # Kernels of the Python runtime, test-only and TPU ops are not in a C++ model server.
    assert not {"PyFunc", "EagerPyFunc", "Foo2", "TPUPartitionedCall"} & core
    # tensorflow-text ops linked by TF Serving 2.20 (ops_lib), not the whole library.
    assert {"WhitespaceTokenizeWithOffsets", "FastWordpieceTokenizeWithOffsets"} <= text
    assert "NormalizeUTF8" in text and len(text) < 60


def test_op_check_rejects_a_graph_tf_serving_cannot_run(tmp_path):
    class PythonOp(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    module = PythonOp()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    assert opset.unsupported_ops(str(tmp_path)) == ["EagerPyFunc"]


def test_export_refuses_to_overwrite_and_stays_atomic(serving_export, tmp_path):
    cfg = serving_export
    with pytest.raises(FileExistsError):
        export_lib.export_model(cfg)
    other = dataclasses.replace(
        cfg, export=dataclasses.replace(cfg.export, base_dir=str(tmp_path), version=7)
    )
    path = export_lib.export_model(other)
    assert path == os.path.join(str(tmp_path), cfg.export.model_name, "7")
    assert os.listdir(os.path.dirname(path)) == ["7"]
    texts = tf.constant(["Crude oil prices rose", "Shr 30 cts vs 25 cts"])
    a = tf.saved_model.load(path).signatures["serving_default"](text=texts)
    b = tf.saved_model.load(cfg.export_dir).signatures["serving_default"](text=texts)
    np.testing.assert_allclose(a["scores"].numpy(), b["scores"].numpy(), rtol=1e-6)


def test_export_runs_in_tf_servings_session_loader(serving_export):
    from serving.loader_check import check_export

    result = check_export(serving_export.export_dir)
    assert result["signatures"] == ["serving_default", "tokenize"]
    assert result["warmup_replayed"] == len(export_lib.WARMUP_BATCH_SIZES)
    assert result["max_abs_diff"] <= 1e-6
    assert result["tagged"] > 0  # the compared tags are not all empty


def test_export_runs_under_tf_servings_own_tensorflow(serving_export, tf_serving_python):
    from doctags_core.export_contract import tf_serving_minor
    from serving.tf_serving_env import run_loader_check

    done = run_loader_check(tf_serving_python, [serving_export.export_dir])
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("ok ") and f"TF {tf_serving_minor()}." in done.stdout
    assert "3 warmup requests replayed" in done.stdout


def test_saved_model_cli_runs_the_serving_signature(serving_export):
    """The command from the bug report, with TensorFlow's own saved_model_cli."""
    import shutil
    import subprocess
    import sys

    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    assert cli, "saved_model_cli is installed with tensorflow"
    done = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            serving_export.export_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            'text=["crude oil prices rose", "net profit rose 5 pct"]',
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Result for output key tags:" in done.stdout
    assert "Result for output key scores:" in done.stdout


def test_session_loader_check_catches_the_keras_tf_module_trap(tmp_path):
    """A Keras model held by a tf.Module and saved with tf.saved_model.save (the
    old export) loads in Python but not in the session loader: the check sees it."""
    import keras

    from doctags_core.session_model import SessionModel

    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))

    class Holder(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.model(x)}

    holder = Holder()
    tf.saved_model.save(holder, str(tmp_path), signatures={"serving_default": holder.serve})
    python_loaded = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    assert python_loaded(x=tf.ones([1, 3]))["y"].shape == (1, 2)
    with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
        with SessionModel(str(tmp_path)) as session:
            session.run("serving_default", {"x": np.ones([1, 3], np.float32)})


def test_export_takes_the_cleaning_of_the_data_not_of_the_config(serving_export, tmp_path):
    from doctags_core.config import ConfigError

    cfg = serving_export
    changed = dataclasses.replace(
        cfg,
        cleaning=dataclasses.replace(cfg.cleaning, steps=("lowercase",)),
        export=dataclasses.replace(cfg.export, base_dir=str(tmp_path)),
    )
    with pytest.raises(ConfigError) as refused:
        export_lib.export_model(changed)
    message = str(refused.value)
    assert "cleaning.steps" in message and "['lowercase']" in message
    assert str(list(cfg.cleaning.steps)) in message  # the data's steps, named too
    assert not os.path.exists(os.path.join(str(tmp_path), cfg.export.model_name))
