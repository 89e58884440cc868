"""`doctags serve`: TF Serving's REST and gRPC APIs over a model base path.

For laptops and tests, where the TF Serving binary is not available. The
model manager (versions, hot loading), the batcher and both front ends live
in their own modules; this one wires them and runs until stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field

from serving.batching import BatchingOptions
from serving.errors import ServingError
from serving.manager import ModelManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """Everything `doctags serve` can be told.

    Attributes:
        model_base_path: Directory of numbered version directories.
        model_name: Name in request URLs and model specs (default: the base
            path's last component).
        host: Interface for both APIs; loopback unless told otherwise.
        rest_port: REST port (0: any free port; None: no REST API).
        grpc_port: gRPC port (0: any free port; None: no gRPC API).
        batching: Dynamic batching parameters.
        max_request_bytes: Request size limit for both APIs.
        poll_seconds: Interval between scans for new versions (0: never).
    """

    model_base_path: str
    model_name: str | None = None
    host: str = "127.0.0.1"
    rest_port: int | None = 8501
    grpc_port: int | None = 8500
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    max_request_bytes: int = 8 << 20
    poll_seconds: float = 1.0

    @property
    def name(self) -> str:
        return self.model_name or os.path.basename(os.path.normpath(self.model_base_path))


class ModelServer:
    """A running local model server; use as a context manager or start/stop.

    Attributes:
        manager: The `ModelManager` (versions, status, batching stats).
        rest_port: The bound REST port, or None.
        grpc_port: The bound gRPC port, or None.
    """

    def __init__(self, options: ServerOptions):
        self.options = options
        self.manager = ModelManager(
            options.model_base_path,
            options.name,
            batching=options.batching,
            poll_seconds=options.poll_seconds,
        )
        self._rest = self._grpc = None
        self.rest_port = self.grpc_port = None

    @property
    def rest_url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.grpc_port}"

    def start(self) -> ModelServer:
        """Loads the newest version, then opens the ports.

        Raises:
            FileNotFoundError: if the base path does not exist.
            OSError: if a port cannot be bound.
        """
        from serving.grpc_service import GrpcServer
        from serving.rest import RestServer

        o = self.options
        self.manager.start()
        try:
            if o.rest_port is not None:
                self._rest = RestServer(self.manager, o.host, o.rest_port, o.max_request_bytes)
                self._rest.start()
                self.rest_port = self._rest.port
            if o.grpc_port is not None:
                self._grpc = GrpcServer(self.manager, o.host, o.grpc_port, o.max_request_bytes)
                self._grpc.start()
                self.grpc_port = self._grpc.port
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Closes the ports, then unloads the versions."""
        if self._rest:
            self._rest.stop()
        if self._grpc:
            self._grpc.stop()
        self.manager.stop()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(options: ServerOptions, ready=print) -> None:
    """Runs a server until SIGINT or SIGTERM (the `doctags serve` command)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ModelServer(options) as server:
        try:
            states = server.manager.status(options.name)
        except ServingError:  # nothing under the base path yet
            states = []
        versions = [s.version for s in states if s.state == "AVAILABLE"]
        parts = [f"serving model '{options.name}' from {options.model_base_path}"]
        parts.append(f"versions {versions}" if versions else "no version yet (polling)")
        if server.rest_port is not None:
            parts.append(f"REST {server.rest_url}/v1/models/{options.name}")
        if server.grpc_port is not None:
            parts.append(f"gRPC {server.grpc_target}")
        ready("; ".join(parts), flush=True)
        stop.wait()
        log.info("stopping")
