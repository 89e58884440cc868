"""TF Serving's REST API over the standard library's threading HTTP server.

Routes (as TF Serving; ``/versions/N`` is optional everywhere):

- ``GET  /v1/models/NAME[/versions/N]``           model status
- ``GET  /v1/models/NAME[/versions/N]/metadata``  signature defs
- ``POST /v1/models/NAME[/versions/N]:predict``   row or columnar predict

Every failure is answered with TF Serving's body ``{"error": "..."}`` and
the HTTP status TF Serving maps its status code to (400 for a bad request,
404 for an unknown model or version, 503 when the queue is full), plus 413
for a body over the size limit and 411 without a Content-Length.
``http.server.ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive) is enough here: the model call, not HTTP parsing, is the cost,
and dynamic batching gathers the concurrent requests.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format

from serving import protocol
from serving.errors import ServingError, invalid
from serving.manager import ModelManager

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: bursts of new connections


class RestServer:
    """The REST front end of `doctags serve`.

    Args:
        manager: Where requests are served.
        host: Interface to bind; loopback unless told otherwise.
        port: 0 picks a free port (see `port`).
        max_request_bytes: Larger bodies get 413 without being read.
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str = "127.0.0.1",
        port: int = 8501,
        max_request_bytes: int = 8 << 20,
    ):
        handler = type("Handler", (_Handler,), {"manager": manager, "limit": max_request_bytes})
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="rest-server"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    timeout = 120  # seconds; an idle keep-alive connection then frees its thread
    server_version = "doctags-serve"
    manager: ModelManager
    limit: int

    def setup(self):
        super().setup()
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to every keep-alive call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the base class' name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._send(status, protocol.encode_error(message))

    def _route(self):
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if not match:
            raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
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

    def do_GET(self):  # noqa: N802 - http.server's naming
        try:
            name, version, action = self._route()
            if action == "/metadata":
                body = self._metadata(name, version)
            elif action is None:
                body = status_json(self.manager.status(name, version))
            else:
                raise ServingError("METHOD_NOT_ALLOWED", f"use POST for {action}", 405)
            self._send(200, json.dumps(body).encode("utf-8"))
        except ServingError as e:
            self._error(e.http_status, e.message)
        except Exception as e:  # the server keeps serving; the caller learns why
            log.exception("GET failed")
            self._error(500, f"internal error: {type(e).__name__}: {e}")

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

    def _read_body(self) -> bytes | None:
        """The body, or None once an error has been answered."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._error(411, "chunked bodies are not accepted; send Content-Length", close=True)
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "a Content-Length header is required", close=True)
            return None
        if int(length) > self.limit:
            # Not read: closing the connection discards it.
            self._error(
                413, f"request body of {length} bytes exceeds the {self.limit}-byte limit", True
            )
            return None
        return self.rfile.read(int(length))

    def do_POST(self):  # noqa: N802 - http.server's naming
        try:
            name, version, action = self._route()
        except ServingError as e:
            self.close_connection = True  # the body was not read
            self._error(e.http_status, e.message)
            return
        body = self._read_body()
        if body is None:
            return
        try:
            if action != ":predict":
                if action in (":classify", ":regress"):
                    raise ServingError(
                        "UNIMPLEMENTED", f"doctags serve implements :predict, not {action}"
                    )
                raise ServingError("METHOD_NOT_ALLOWED", f"use GET for {self.path}", 405)
            with self.manager.acquire(name, version) as servable:
                call = protocol.parse_predict_request(body, servable.loaded.signatures)
                outputs = servable.predict(call.signature_name, call.inputs)
            self._send(200, protocol.encode_predict_response(outputs, call.row_format))
        except ServingError as e:
            self._error(e.http_status, e.message)
        except Exception as e:  # the server keeps serving; the caller learns why
            log.exception("predict failed")
            self._error(500, f"internal error: {type(e).__name__}: {e}")

    def do_PUT(self):  # noqa: N802
        self._error(405, f"{self.command} is not supported", close=True)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815
