"""One loaded version of a SavedModel, run the way TensorFlow Serving runs it.

The version is loaded with the session-based loader TF Serving uses
(`doctags_core.session_model.SessionModel`: the meta graph imported into a
session, restore and init ops run, tensors fed and fetched by the names in
the signature defs), and every request is served through that session. An
export that only Python's object-graph loader can run (the Keras-in-a-
``tf.Module`` trap) therefore fails here exactly as it fails in TF Serving,
instead of being served by a path production never takes.

Nothing from the trainer is imported, so `doctags serve` runs any SavedModel
with string or numeric inputs, like TF Serving, not only doctags' own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from doctags_core import export_contract as contract
from doctags_core.session_model import SessionModel
from serving.errors import ServingError, invalid
from serving.protocol import SignatureInfo, TensorInfo

log = logging.getLogger(__name__)


def _tensor_info(proto) -> TensorInfo:
    """A signature def's ``TensorInfo`` proto as the protocol's `TensorInfo`."""
    import tensorflow as tf

    shape = proto.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorInfo(dtype=tf.dtypes.as_dtype(proto.dtype).name, shape=dims)


def _callable(name: str, signature) -> bool:
    """Signatures a request may name: not the loader's own (``__saved_model_init_op``)."""
    return not name.startswith("__") and bool(signature.inputs) and bool(signature.outputs)


def error_code_of(error: Exception) -> str:
    """The canonical status code name of a TensorFlow error (UNKNOWN for anything else)."""
    code = getattr(error, "error_code", None)
    if code is None:
        return "UNKNOWN"
    from tensorflow.core.protobuf import error_codes_pb2

    try:
        return error_codes_pb2.Code.Name(code)
    except ValueError:
        return "UNKNOWN"


def error_text(error: Exception, limit: int = 1000) -> str:
    """A TensorFlow error on one line: its message without the graph dump's blank lines."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(message.split())[:limit]


class LoadedVersion:
    """A SavedModel version in its own session, with the signatures requests are checked against.

    Args:
        path: The version directory.
        version: Its number (the directory name).

    Raises:
        Whatever the session loader raises for a version TF Serving could
        not load either (unparsable ``saved_model.pb``, missing variables,
        an op that is not registered).

    Attributes:
        version: The numeric version.
        path: The version directory.
        signatures: ``{name: SignatureInfo}`` of the callable signatures.
        signature_defs: The ``SignatureDefMap`` proto for metadata answers
            (every signature of the ``serve`` meta graph, as TF Serving lists them).
    """

    def __init__(self, path: str, version: int):
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.path = path
        self.version = version
        self._session = SessionModel(path)
        defs = self._session.signature_defs
        self.signatures = {
            name: SignatureInfo(
                inputs={k: _tensor_info(v) for k, v in sig.inputs.items()},
                outputs={k: _tensor_info(v) for k, v in sig.outputs.items()},
            )
            for name, sig in defs.items()
            if _callable(name, sig)
        }
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in defs.items():
            self.signature_defs.signature_def[name].CopyFrom(sig)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature on a (batched) input dict in the version's session.

        Raises:
            ServingError: with TensorFlow's status code (INVALID_ARGUMENT,
                FAILED_PRECONDITION...) when the session rejects the run.
        """
        import tensorflow as tf

        info = self.signatures[signature].inputs
        feeds = {
            k: np.asarray(v, dtype=tf.as_dtype(info[k].dtype).as_numpy_dtype)
            for k, v in inputs.items()
        }
        try:
            return self._session.run(signature, feeds)
        except tf.errors.OpError as e:
            raise ServingError(error_code_of(e), error_text(e)) from None
        except (TypeError, ValueError) as e:
            raise invalid(f"the model rejected the inputs: {error_text(e)}") from None

    def warmup_requests(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(signature, inputs)`` of each predict record of ``assets.extra``'s warmup file.

        Raises:
            ServingError: for a record naming a signature the model lacks
                (TF Serving refuses the version then, too).
        """
        for signature, inputs in self._session.warmup_requests():
            if signature not in self.signatures:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"warmup record names signature {signature!r}, which "
                    f"{contract.warmup_path(self.path)} does not serve",
                )
            yield signature, inputs

    def close(self) -> None:
        """Frees the session (variables and tables)."""
        self._session.close()
