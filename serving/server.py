"""`doctags serve`: TF Serving's REST and gRPC APIs over a model base path.

For laptops and tests, where the TF Serving binary is not available. The
model manager (versions, hot loading, retries), the batcher, the metrics and
both front ends live in their own modules; this one wires them and runs
until stopped.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field

from serving.batching import BatchingOptions
from serving.errors import ServingError
from serving.http_server import HttpLimits
from serving.manager import ModelManager
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: resolve it
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos
        )


def exposure_warning(host: str) -> str | None:
    """The warning `doctags serve` prints before binding a non-loopback interface."""
    if is_loopback(host):
        return None
    return (
        f"--host {host} exposes the model server beyond this machine: anyone who "
        "reaches the port can call every model, unauthenticated and in plain text (no TLS). "
        "Put TLS and authentication in front (a reverse proxy or ingress) and bind 127.0.0.1 "
        "behind it; see README, Serving."
    )


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
        max_num_load_retries: Attempts after the first to load a version.
        load_retry_interval: Seconds between load attempts.
        http: REST connection and thread bounds and timeouts.
        grpc_workers: gRPC handler threads.
        grpc_max_concurrent_rpcs: gRPC calls accepted at once.
        metrics_path: Prometheus metrics path on the REST port (None: off).
    """

    model_base_path: str
    model_name: str | None = None
    host: str = "127.0.0.1"
    rest_port: int | None = 8501
    grpc_port: int | None = 8500
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    max_request_bytes: int = 8 << 20
    poll_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval: float = 60.0
    http: HttpLimits = field(default_factory=HttpLimits)
    grpc_workers: int = 32
    grpc_max_concurrent_rpcs: int = 1024
    metrics_path: str | None = None

    @property
    def name(self) -> str:
        return self.model_name or os.path.basename(os.path.normpath(self.model_base_path))


class ModelServer:
    """A running local model server; use as a context manager or start/stop.

    Attributes:
        manager: The `ModelManager` (versions, status, batching stats).
        metrics: Request counters and histograms of both APIs.
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
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval=options.load_retry_interval,
        )
        self.metrics = ServingMetrics()
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
                self._rest = RestServer(
                    self.manager,
                    o.host,
                    o.rest_port,
                    o.max_request_bytes,
                    limits=o.http,
                    metrics=self.metrics,
                    metrics_path=o.metrics_path,
                    render_metrics=self.render_metrics,
                )
                self._rest.start()
                self.rest_port = self._rest.port
            if o.grpc_port is not None:
                self._grpc = GrpcServer(
                    self.manager,
                    o.host,
                    o.grpc_port,
                    o.max_request_bytes,
                    workers=o.grpc_workers,
                    max_concurrent_rpcs=o.grpc_max_concurrent_rpcs,
                    metrics=self.metrics,
                )
                self._grpc.start()
                self.grpc_port = self._grpc.port
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def http(self):
        """The REST `serving.http_server.HttpServer` (connection counters), or None."""
        return self._rest.http if self._rest else None

    def render_metrics(self) -> str:
        """The Prometheus page (`serving.metrics`)."""
        return self.metrics.render(self.manager, self.http)

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
    warning = exposure_warning(options.host)
    if warning:
        log.warning("%s", warning)
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
        if options.metrics_path and server.rest_port is not None:
            parts.append(f"metrics {server.rest_url}{options.metrics_path}")
        ready("; ".join(parts), flush=True)
        stop.wait()
        log.info("stopping")
