"""One loaded version of a SavedModel: its signatures, metadata and warmup.

Loaded with TensorFlow alone (``tf.saved_model.load``); nothing from the
trainer is imported, so `doctags serve` runs any SavedModel with string or
numeric inputs, exactly like TF Serving, not only doctags' own.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from serving.errors import ServingError, invalid
from serving.model import load_saved_model
from serving.protocol import SignatureInfo, TensorInfo

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
INIT_OP_SIGNATURE = "__saved_model_init_op"  # listed in metadata, not callable


def _tensor_info(spec: tf.TensorSpec) -> TensorInfo:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(dtype=spec.dtype.name, shape=shape)


def signature_def_map(path: str):
    """The ``serve`` meta graph's signature defs, as GetModelMetadata returns them."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            result = get_model_metadata_pb2.SignatureDefMap()
            for name, signature in meta_graph.signature_def.items():
                result.signature_def[name].CopyFrom(signature)
            return result
    raise ValueError(f"{path}: no meta graph tagged '{SERVE_TAG}'")


class LoadedVersion:
    """A SavedModel version ready to run, with the signature info requests are checked against.

    Attributes:
        version: The numeric version (its directory name).
        path: The version directory.
        signatures: ``{name: SignatureInfo}`` of the callable signatures.
        signature_defs: The ``SignatureDefMap`` proto for metadata answers.
    """

    def __init__(self, path: str, version: int):
        self.path = path
        self.version = version
        self._loaded = load_saved_model(path, tags=[SERVE_TAG])
        self._functions = dict(self._loaded.signatures)
        self.signatures = {}
        for name, fn in self._functions.items():
            _, kwargs = fn.structured_input_signature
            self.signatures[name] = SignatureInfo(
                inputs={k: _tensor_info(v) for k, v in kwargs.items()},
                outputs={k: _tensor_info(v) for k, v in fn.structured_outputs.items()},
            )
        self.signature_defs = signature_def_map(path)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature on a (batched) input dict.

        Raises:
            ServingError: INVALID_ARGUMENT when TensorFlow rejects the inputs.
        """
        fn = self._functions[signature]
        info = self.signatures[signature].inputs
        try:
            tensors = {
                k: tf.convert_to_tensor(v, dtype=tf.as_dtype(info[k].dtype))
                for k, v in inputs.items()
            }
            return {k: v.numpy() for k, v in fn(**tensors).items()}
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            raise invalid(f"the model rejected the inputs: {str(e).splitlines()[0]}") from None

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` like TF Serving does.

        Only predict logs are replayed (the only kind doctags writes); the
        count of replayed records is returned.

        Raises:
            ServingError: if a warmup request fails; the version is then not
                served, as TF Serving would refuse it.
        """
        path = os.path.join(self.path, WARMUP_PATH)
        if not tf.io.gfile.exists(path):
            return 0
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            record = prediction_log_pb2.PredictionLog.FromString(raw)
            if record.WhichOneof("log_type") != "predict_log":
                continue
            request = record.predict_log.request
            signature = request.model_spec.signature_name or "serving_default"
            if signature not in self._functions:
                raise ServingError("INVALID_ARGUMENT", f"warmup: unknown signature {signature}")
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self.run(signature, inputs)
            count += 1
        return count
