"""A SavedModel run the way TensorFlow Serving runs it: the session-based loader.

TF Serving (C++ ``LoadSavedModel``), ``saved_model_cli run`` and TensorFlow's
C API ``TF_LoadSessionFromSavedModel`` all import the meta graph into a
session, run its restore op to fill the variables and its init op to fill
the lookup tables, then feed and fetch tensors by the names in the
signature defs. Python's ``tf.saved_model.load`` takes another road (it
rebuilds the object graph), so an export can work there and fail here:
"Could not find variable ..." when the restore op fills other variable
handles than the ones the signatures read (keras-team/keras#20095).

`SessionModel` is that session-based path, through TensorFlow's own
``tf.compat.v1.saved_model.loader.load``. The export replays its warmup
through it before a version is published, `doctags serve` serves through
it, and the tests compare it with the object-graph loader. It imports
TensorFlow and NumPy only (plus tensorflow-serving-api's protos for the
warmup file), so it also runs under the TensorFlow release that the
targeted TF Serving links (see `export_contract.TF_SERVING_VERSION`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from doctags_core import export_contract as contract


@contextlib.contextmanager
def _quiet_deprecations():
    """The v1 loader logs a deprecation notice on every call; it is the point here."""
    try:
        from tensorflow.python.util import deprecation

        with deprecation.silence():
            yield
    except ImportError:  # pragma: no cover - TensorFlow moved it
        yield


def register_text_ops_if_needed(error: Exception) -> bool:
    """Imports tensorflow-text when the graph needs its ops (WordPiece exports)."""
    if "not registered" not in str(error) and "Op type" not in str(error):
        return False
    import tensorflow_text  # noqa: F401  (registers the ops, as TF Serving links them)

    return True


class SessionModel:
    """One SavedModel version loaded into its own graph and session.

    Args:
        path: The version directory.
        tags: Meta graph tags (TF Serving loads ``serve``).

    Raises:
        Whatever the loader raises: ``tf.errors.FailedPreconditionError``
        ("Could not find variable ...") for a broken restore, or
        ``NotFoundError`` for an op that is not registered.
    """

    def __init__(self, path: str, tags: tuple[str, ...] = (contract.SERVE_TAG,)):
        self.path = path
        try:
            self._load(tags)
        except Exception as e:
            if not register_text_ops_if_needed(e):
                raise
            self._load(tags)

    def _load(self, tags) -> None:
        import tensorflow as tf

        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        try:
            with self._graph.as_default(), _quiet_deprecations():
                meta = tf.compat.v1.saved_model.loader.load(self._session, list(tags), self.path)
        except Exception:
            self._session.close()
            raise
        self.signature_defs = dict(meta.signature_def)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds ``inputs`` by their signature names and fetches every output.

        Raises:
            KeyError: for an unknown signature or input name.
        """
        sig = self.signature_defs[signature]
        feeds = {sig.inputs[name].name: value for name, value in inputs.items()}
        fetches = {name: info.name for name, info in sig.outputs.items()}
        return self._session.run(fetches, feed_dict=feeds)

    def warmup_requests(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(signature, inputs)`` of each predict record in the warmup file, in order."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = contract.warmup_path(self.path)
        if not tf.io.gfile.exists(path):
            return
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            record = prediction_log_pb2.PredictionLog.FromString(raw)
            if record.WhichOneof("log_type") != "predict_log":
                continue
            request = record.predict_log.request
            signature = request.model_spec.signature_name or contract.SIGNATURE
            yield signature, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}

    def replay_warmup(self) -> int:
        """Runs every warmup request, as TF Serving does before serving; returns the count."""
        count = 0
        for signature, inputs in self.warmup_requests():
            self.run(signature, inputs)
            count += 1
        return count

    def close(self) -> None:
        """Frees the session (and with it the variables and tables)."""
        self._session.close()

    def __enter__(self) -> SessionModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
