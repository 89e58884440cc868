"""TF Serving's gRPC API (tensorflow-serving-api's generated services).

``tensorflow.serving.PredictionService``: Predict and GetModelMetadata
(Classify, Regress and MultiInference answer UNIMPLEMENTED), and
``tensorflow.serving.ModelService``: GetModelStatus. Because the servicers
are registered with tensorflow-serving-api's own generated code, a client
built for TF Serving (including `serving.client.GrpcClient`) talks to this
server unchanged.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import protocol
from serving.errors import ServingError, invalid, not_found
from serving.manager import ModelManager
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

_STATE = get_model_status_pb2.ModelVersionStatus.State


def _abort(context, error: ServingError):
    context.abort(getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN), error.message)


def _version(model_spec) -> int | None:
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise not_found(
            f"version labels are not configured; unknown label {model_spec.version_label!r}"
        )
    if model_spec.HasField("version"):
        return model_spec.version.value
    return None


def _inputs(request, signatures) -> tuple[str, dict]:
    """Validated ``(signature_name, {input: ndarray})`` of a PredictRequest."""
    name = request.model_spec.signature_name or protocol.DEFAULT_SIGNATURE
    if name not in signatures:  # TF Serving's predict_util.cc: FAILED_PRECONDITION
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    expected = signatures[name].inputs
    given = set(request.inputs)
    unknown = sorted(given - set(expected))
    if unknown:
        raise invalid(
            f"input tensor alias not found in signature: {', '.join(unknown)}. "
            f"Inputs expected to be in the set {{{', '.join(sorted(expected))}}}."
        )
    missing = sorted(set(expected) - given)
    if missing:
        raise invalid(f"missing input(s) {', '.join(missing)}")
    inputs = {}
    for key, proto in request.inputs.items():
        info = expected[key]
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
        if got != info.dtype:
            raise invalid(f"input '{key}' expects dtype {info.dtype}, got {got}")
        try:
            array = tf.make_ndarray(proto)
        except (TypeError, ValueError) as e:
            raise invalid(f"input '{key}': malformed TensorProto: {e}") from None
        protocol.check_shape(array.shape, key, info)
        inputs[key] = array
    return name, inputs


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a `ModelManager`.

    Args:
        manager: Where requests are served.
        metrics: Where Predict calls are counted (as TF Serving counts them).
    """

    def __init__(self, manager: ModelManager, metrics: ServingMetrics | None = None):
        self.manager = manager
        self.metrics = metrics

    def Predict(self, request, context):
        started, status, rows = time.monotonic(), "OK", None
        try:
            response, rows = self._predict(request)
            return response
        except ServingError as e:
            status = e.code
            _abort(context, e)
        except Exception as e:
            status = "INTERNAL"
            log.exception("Predict failed")
            _abort(context, ServingError("INTERNAL", f"{type(e).__name__}: {e}"))
        finally:
            if self.metrics is not None:
                name = request.model_spec.name
                self.metrics.record(
                    name, "Predict", "GRPC", status, time.monotonic() - started, rows
                )

    def _predict(self, request):
        """``(PredictResponse, rows)``."""
        version = _version(request.model_spec)
        with self.manager.acquire(request.model_spec.name, version) as servable:
            signature, inputs = _inputs(request, servable.loaded.signatures)
            wanted = list(request.output_filter)
            outputs_info = servable.loaded.signatures[signature].outputs
            unknown = sorted(set(wanted) - set(outputs_info))
            if unknown:
                raise invalid(f"output_filter names unknown output(s) {', '.join(unknown)}")
            outputs = servable.predict(signature, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response, len(next(iter(inputs.values())))

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            if fields != ["signature_def"]:
                raise invalid(f"metadata field(s) {fields} not supported; use signature_def")
            version = _version(request.model_spec)
            with self.manager.acquire(request.model_spec.name, version) as servable:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = servable.version
                response.metadata["signature_def"].Pack(servable.loaded.signature_defs)
                return response
        except ServingError as e:
            _abort(context, e)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "doctags serve implements Predict only")

    Classify = Regress = MultiInference = _unimplemented


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over a `ModelManager` (no config reloading)."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        try:
            statuses = self.manager.status(request.model_spec.name, _version(request.model_spec))
        except ServingError as e:
            _abort(context, e)
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            entry = response.model_version_status.add()
            entry.version = s.version
            entry.state = _STATE.Value(s.state)
            entry.status.error_code = error_codes_pb2.Code.Value(s.error_code)
            entry.status.error_message = s.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "doctags serve has no model config to reload")


class GrpcServer:
    """The gRPC front end of `doctags serve`.

    Args:
        manager: Where requests are served.
        host: Interface to bind; loopback unless told otherwise.
        port: 0 picks a free port (see `port`).
        max_request_bytes: gRPC's receive limit; larger messages fail with
            RESOURCE_EXHAUSTED before reaching the servicer.
        workers: Handler threads (concurrent requests being served).
        max_concurrent_rpcs: RPCs accepted at once (running or waiting for a
            thread); beyond, RESOURCE_EXHAUSTED instead of an unbounded queue.
        idle_seconds: A connection without RPCs for this long is closed
            (gRPC's ``max_connection_idle``), so idle clients do not pile up.
        metrics: Where Predict calls are counted.
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str = "127.0.0.1",
        port: int = 8500,
        max_request_bytes: int = 8 << 20,
        workers: int = 32,
        max_concurrent_rpcs: int = 1024,
        idle_seconds: float = 120.0,
        metrics: ServingMetrics | None = None,
    ):
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_connection_idle_ms", int(idle_seconds * 1000)),
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(manager, metrics), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(manager), self._server
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"gRPC could not bind {address}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 5.0) -> None:
        self._server.stop(grace).wait()
