"""TF Serving's REST API over `serving.http_server` (one event loop, bounded threads).

Routes (as TF Serving; ``/versions/N`` is optional everywhere):

- ``GET  /v1/models/NAME[/versions/N]``           model status
- ``GET  /v1/models/NAME[/versions/N]/metadata``  signature defs
- ``POST /v1/models/NAME[/versions/N]:predict``   row or columnar predict
- ``GET  /monitoring/prometheus/metrics``          metrics, when a monitoring
  config turns Prometheus on (the path is the config's)

Every failure is answered with TF Serving's body ``{"error": "..."}`` and
the HTTP status TF Serving maps its status code to (400 for a bad request,
including a method that does not fit the path, TF Serving's "Malformed
request"; 404 for an unknown model, version or path; 503 when the batch
queue is full), plus 413 for a body over the size limit, 411 without a
Content-Length and 431 for oversized headers (`serving.http_server`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from google.protobuf import json_format

from serving import protocol
from serving.errors import ServingError, invalid
from serving.http_server import HttpLimits, HttpServer, Request, Response, json_error
from serving.manager import ModelManager
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:predict|:classify|:regress)?/?$"
)


def status_json(statuses) -> dict:
    """GetModelStatusResponse as TF Serving's REST gateway prints it."""
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state,
                "status": {"error_code": s.error_code, "error_message": s.error_message},
            }
            for s in statuses
        ]
    }


def _ok(body: dict | bytes) -> Response:
    return Response(200, body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))


class RestApp:
    """The REST handlers: a `Request` in, a `Response` out (runs on a pool thread).

    Args:
        manager: Where requests are served.
        metrics: Where requests are counted (None: not counted).
        metrics_path: The Prometheus path, or None when it is off.
        render_metrics: Builds the metrics page.
    """

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics | None = None,
        metrics_path: str | None = None,
        render_metrics: Callable[[], str] | None = None,
    ):
        self.manager = manager
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.render_metrics = render_metrics

    def __call__(self, request: Request) -> Response:
        if self.metrics_path and request.path == self.metrics_path:
            if request.method != "GET":
                return json_error(400, f"Malformed request: {request.method} {request.path}")
            return Response(200, self.render_metrics().encode("utf-8"), "text/plain")
        started = time.monotonic()
        name, api, rows = "", "", None
        try:
            name, version, action = self._route(request)
            api = {":predict": "predict", "/metadata": "metadata", None: "status"}.get(action, "")
            response, rows = self._dispatch(request, name, version, action)
            status = "OK"
        except ServingError as e:
            response, status = json_error(e.http_status, e.message), e.code
        if self.metrics is not None:
            self.metrics.record(name, api, "REST", status, time.monotonic() - started, rows)
        return response

    def _route(self, request: Request):
        match = _ROUTE.match(request.path)
        if not match:
            raise ServingError("NOT_FOUND", f"Malformed request: {request.method} {request.target}")
        if match["label"] is not None:
            raise ServingError(
                "NOT_FOUND", f"version labels are not configured; unknown label {match['label']!r}"
            )
        version = match["version"]
        if version is not None:
            if not version.isdigit():
                raise invalid(f"version must be a positive integer, got {version!r}")
            version = int(version)
        return match["name"], version, match["action"]

    def _dispatch(self, request: Request, name: str, version, action):
        """``(response, rows)`` for a routed request; TF Serving's methods per path."""
        method = request.method
        if method == "GET" and action in (None, "/metadata"):
            if action == "/metadata":
                return _ok(self._metadata(name, version)), None
            return _ok(status_json(self.manager.status(name, version))), None
        if method == "POST" and action in (":classify", ":regress"):
            raise ServingError("UNIMPLEMENTED", f"doctags serve implements :predict, not {action}")
        if method == "POST" and action == ":predict":
            return self._predict(request.body, name, version)
        # TF Serving answers any other method/path pair with INVALID_ARGUMENT.
        expected = "POST" if action in (":predict", ":classify", ":regress") else "GET"
        raise invalid(f"Malformed request: {method} {request.target} (use {expected})")

    def _metadata(self, name: str, version: int | None) -> dict:
        with self.manager.acquire(name, version) as servable:
            defs = json_format.MessageToDict(
                servable.loaded.signature_defs, preserving_proto_field_name=True
            )
            return {
                "model_spec": {
                    "name": name,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": defs},
            }

    def _predict(self, body: bytes, name: str, version: int | None):
        with self.manager.acquire(name, version) as servable:
            call = protocol.parse_predict_request(body, servable.loaded.signatures)
            outputs = servable.predict(call.signature_name, call.inputs)
        return _ok(protocol.encode_predict_response(outputs, call.row_format)), call.batch_size


class RestServer:
    """The REST front end of `doctags serve`.

    Args:
        manager: Where requests are served.
        host: Interface to bind; loopback unless told otherwise.
        port: 0 picks a free port (see `port`).
        max_request_bytes: Larger bodies get 413 without being read.
        limits: Connection and thread bounds and timeouts (``max_body_bytes``
            is taken from ``max_request_bytes``).
        metrics: Where requests are counted.
        metrics_path: Prometheus path (None: no metrics endpoint).
        render_metrics: Builds the metrics page from the server's state.
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str = "127.0.0.1",
        port: int = 8501,
        max_request_bytes: int = 8 << 20,
        limits: HttpLimits | None = None,
        metrics: ServingMetrics | None = None,
        metrics_path: str | None = None,
        render_metrics: Callable[[], str] | None = None,
    ):
        limits = limits or HttpLimits()
        limits = HttpLimits(**{**limits.__dict__, "max_body_bytes": max_request_bytes})
        app = RestApp(manager, metrics, metrics_path, render_metrics)
        self.http = HttpServer(app, host, port, limits, name="rest")

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self.http.start()

    def stop(self) -> None:
        self.http.stop()
