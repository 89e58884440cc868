"""Clients for TF Serving's REST and gRPC APIs (and `doctags serve`, which speaks both).

    client = connect("http://127.0.0.1:8501", "reuters")     # or "grpc://127.0.0.1:8500"
    client.tag(["Crude oil prices rose"])   # [[("crude", 0.93)]]
    client.status(); client.metadata()

`RestClient` needs only ``requests`` and numpy (no TensorFlow), so it fits
in any application; `GrpcClient` uses tensorflow-serving-api's generated
stubs, which import TensorFlow's protos. Both raise `ServingError` with the
server's status code and message.
"""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import urlsplit

import numpy as np

from doctags_core.export_contract import INPUT_NAME, decode_tags
from serving.errors import HTTP_STATUS, ServingError

_CODE_OF_HTTP = {v: k for k, v in reversed(list(HTTP_STATUS.items()))}


def tags_from_outputs(outputs: dict) -> list[list[tuple[str, float]]]:
    """``(tag, score)`` pairs per text from a predict answer's ``tags``/``tag_scores``."""
    return decode_tags(outputs["tags"], outputs["tag_scores"])


def _from_json(value) -> np.ndarray:
    """A JSON batch to an array; ``{"b64": ...}`` strings become bytes."""

    def decode(x):
        if isinstance(x, list):
            return [decode(v) for v in x]
        if isinstance(x, dict) and set(x) == {"b64"}:
            return base64.b64decode(x["b64"])
        return x

    value = decode(value)
    array = np.asarray(value)
    if array.dtype.kind == "U":  # keep text as Python str objects, like bytes
        array = array.astype(object)
    return array


class RestClient:
    """TF Serving REST API client; thread-safe (one HTTP session per thread).

    Args:
        url: ``http://host:port`` or a model URL
            ``http://host:port/v1/models/NAME[/versions/N]``.
        model_name: Required unless the URL names the model.
        version: Pin a version (default: the server's latest).
        timeout: Seconds per HTTP call.
    """

    def __init__(
        self,
        url: str,
        model_name: str | None = None,
        version: int | None = None,
        timeout: float = 30.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"REST URL must look like http://host:port, got {url!r}")
        match = re.match(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?/?$", parts.path)
        if match:
            model_name = model_name or match[1]
            version = version if version is not None else (int(match[2]) if match[2] else None)
        elif parts.path not in ("", "/"):
            raise ValueError(f"unexpected path in {url!r}; give http://host:port")
        if not model_name:
            raise ValueError("a model name is required (in the URL or as model_name)")
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self._local = threading.local()

    @property
    def model_url(self) -> str:
        url = f"{self.base}/v1/models/{self.model_name}"
        return url if self.version is None else f"{url}/versions/{self.version}"

    def _session(self):
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        import requests

        try:
            response = self._session().request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise ServingError("UNAVAILABLE", f"{method} {url}: {e}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text[:500]}
        if response.status_code != 200:
            message = payload.get("error", response.text[:500]) if isinstance(payload, dict) else ""
            code = _CODE_OF_HTTP.get(response.status_code, "UNKNOWN")
            raise ServingError(code, message, response.status_code)
        return payload

    def status(self) -> dict:
        """``GET /v1/models/NAME[/versions/N]``: the version states."""
        return self._call("GET", self.model_url)

    def metadata(self) -> dict:
        """``GET .../metadata``: model spec and signature defs."""
        return self._call("GET", self.model_url + "/metadata")

    def predict_json(self, body: dict) -> dict:
        """Posts a raw TF Serving predict body and returns the raw JSON answer."""
        return self._call("POST", self.model_url + ":predict", body)

    def predict(
        self, texts: list[str], signature_name: str | None = None, columnar: bool = False
    ) -> dict[str, np.ndarray]:
        """Outputs of the signature for a batch of texts, as arrays.

        Args:
            texts: The batch (the ``text`` input).
            signature_name: Default: the server's, ``serving_default``
                (`doctags_core.export_contract.SIGNATURE`).
            columnar: Send ``{"inputs": ...}`` instead of ``{"instances": ...}``.
        """
        body: dict = (
            {"inputs": {INPUT_NAME: list(texts)}}
            if columnar
            else {"instances": [{INPUT_NAME: t} for t in texts]}
        )
        if signature_name:
            body["signature_name"] = signature_name
        answer = self.predict_json(body)
        if columnar:
            outputs = answer["outputs"]
            if not isinstance(outputs, dict):
                outputs = {"output": outputs}
            return {k: _from_json(v) for k, v in outputs.items()}
        rows = answer["predictions"]
        if rows and isinstance(rows[0], dict) and not set(rows[0]) == {"b64"}:
            return {k: _from_json([r[k] for r in rows]) for k in rows[0]}
        return {"output": _from_json(rows)}

    def tag(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """Tags of each text, best first, as ``(tag, score)`` pairs."""
        return tags_from_outputs(self.predict(texts))


class GrpcClient:
    """TF Serving gRPC client (PredictionService and ModelService stubs).

    Args:
        target: ``host:port``.
        model_name: The served model's name.
        version: Pin a version (default: the server's latest).
        timeout: Seconds per call.
        max_message_bytes: Largest response accepted.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        version: int | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = 64 << 20,
    ):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if not model_name:
            raise ValueError("a model name is required for gRPC")
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spec(self, spec, signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        if signature_name:
            spec.signature_name = signature_name

    def _rpc(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code().name, e.details() or str(e)) from None

    def predict_response(
        self, texts: list[str], signature_name: str | None = None, output_filter=()
    ):
        """The raw ``PredictResponse`` (its ``model_spec`` tells the version that answered)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
        request.output_filter.extend(output_filter)
        return self._rpc(self._predict.Predict, request)

    def predict(self, texts: list[str], signature_name: str | None = None) -> dict[str, np.ndarray]:
        """Outputs of the signature for a batch of texts, as arrays."""
        import tensorflow as tf

        response = self.predict_response(texts, signature_name)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def tag(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """Tags of each text, best first, as ``(tag, score)`` pairs."""
        return tags_from_outputs(self.predict(texts))

    def status(self) -> dict:
        """ModelService.GetModelStatus, as the REST API's JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._rpc(self._models.GetModelStatus, request)
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    def metadata(self) -> dict:
        """PredictionService.GetModelMetadata (signature defs), as the REST API's JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._rpc(self._predict.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        return {
            "model_spec": {
                "name": response.model_spec.name,
                "signature_name": response.model_spec.signature_name,
                "version": str(response.model_spec.version.value),
            },
            "metadata": {
                "signature_def": json_format.MessageToDict(defs, preserving_proto_field_name=True)
            },
        }


def connect(
    url: str, model_name: str | None = None, version: int | None = None, timeout: float = 30.0
):
    """A client for ``http(s)://...`` (REST) or ``grpc://host:port`` (gRPC) URLs."""
    if url.startswith("grpc://"):
        target = url[len("grpc://") :].rstrip("/")
        return GrpcClient(target, model_name, version, timeout)
    return RestClient(url, model_name, version, timeout)
