"""The TF Serving-ready export: layout, warmup records, metadata, and the op set."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from doctags.cli import main
from doctags_core.config import load_config
from serving import opset
from tests.conftest import small_config
from trainer import export as export_lib


@pytest.fixture(scope="session")
def serving_export(tmp_path_factory, reuters_slice):
    """A tiny model trained on a real Reuters slice and exported once for all serving tests."""
    tmp = tmp_path_factory.mktemp("serving")
    # A few epochs, so that the model tags some texts and comparisons are not vacuous.
    config = small_config(tmp, reuters_slice, training={"epochs": 6, "learning_rate": 0.01})
    for command in (["preprocess"], ["train"], ["export"]):
        assert main([*command, "--config", config]) == 0
    return load_config(config)


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
