"""A small HTTP/1.1 server with bounded threads and connections, for `doctags serve`'s REST API.

Why not ``http.server.ThreadingHTTPServer``: it spends a thread per
connection from the moment of accept, so 4,000 clients that trickle their
headers hold 4,000 threads, the accept loop falls behind, connections
overflow the listen backlog and later clients wait for SYN retransmits
(minutes); every client that hangs up mid-request leaves a traceback.

Here one asyncio event loop owns every socket (TF Serving's REST server is
event-driven too, on libevent): a connection costs a buffer, not a thread,
until its request is complete. Only then is the request handed to a fixed
pool of handler threads (``max_workers``), one request per connection at a
time, so the threads are bounded and so is the work queued for them
(``max_connections``). Timeouts close what would otherwise be held forever:
``header_timeout`` for the request line and headers (counted from the
first byte, so trickling does not extend it), ``body_timeout`` for the
body, ``idle_timeout`` between keep-alive requests, ``write_timeout`` for a
client that does not read its answer. At ``max_connections`` the
connection that has waited longest without sending a complete request is
evicted to make room, so slow clients cannot lock out fast ones. Each
dropped connection is one log line and one count in `dropped` (by reason),
never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

IDLE, HEADERS, BODY, BUSY = "idle", "headers", "body", "busy"
_END_OF_HEADERS = b"\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    """How much a client may hold, and for how long.

    Attributes:
        max_connections: Open connections at most; beyond, the oldest one
            without a complete request is evicted (or the new one refused).
        max_workers: Handler threads (requests being served at once).
        header_timeout: Seconds for the request line and headers, from their
            first byte (a new connection's clock starts at accept).
        body_timeout: Seconds for the body, from the end of the headers.
        idle_timeout: Seconds a keep-alive connection may wait between requests.
        write_timeout: Seconds a client may leave its answer unread.
        max_header_bytes: Request line plus headers at most (431 beyond).
        max_body_bytes: Body at most (413 beyond, not read).
    """

    max_connections: int = 1024
    max_workers: int = 32
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 120.0
    write_timeout: float = 60.0
    max_header_bytes: int = 64 << 10
    max_body_bytes: int = 8 << 20

    def __post_init__(self):
        for name in ("max_connections", "max_workers", "max_header_bytes", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "body_timeout", "idle_timeout", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


@dataclass
class Request:
    """A complete HTTP request.

    Attributes:
        method: As sent (``GET``, ``POST``...).
        target: The request target (path and query).
        headers: Lower-cased header names to values.
        body: The body (empty without Content-Length).
        peer: ``host:port`` of the client, for logs.
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Response:
    """What a handler answers: status, body and its content type."""

    status: int
    body: bytes
    content_type: str = "application/json"
    close: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def json_error(status: int, message: str, close: bool = False) -> Response:
    """TF Serving's error body, ``{"error": "..."}``."""
    return Response(status, json.dumps({"error": message}).encode("utf-8"), close=close)


def _encode(response: Response, keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Error"
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Server: doctags-serve",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


class _BadRequest(Exception):
    """A request the connection cannot continue after: answered, then closed."""

    def __init__(self, response: Response, reason: str):
        super().__init__(reason)
        self.response = response
        self.reason = reason


def _bad(status: int, message: str, reason: str) -> _BadRequest:
    return _BadRequest(json_error(status, message, close=True), reason)


def parse_head(head: bytes, peer: str) -> tuple[Request, bool]:
    """``(request without body, keep_alive)`` from the request line and headers.

    Raises:
        _BadRequest: 400 for a malformed request line or header, 505 for an
            HTTP version other than 1.0 and 1.1.
    """
    text = head.decode("latin-1")
    line, _, rest = text.partition("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _bad(400, f"malformed request line {line[:100]!r}", "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _bad(505, f"{version[:20]} is not supported; use HTTP/1.1", "bad version")
    headers: dict[str, str] = {}
    for raw in filter(None, rest.split("\r\n")):
        name, sep, value = raw.partition(":")
        if not sep or not name or name != name.strip():
            raise _bad(400, f"malformed header line {raw[:100]!r}", "bad header")
        name, value = name.lower(), value.strip()
        if name not in headers:
            headers[name] = value
        elif name == "content-length":
            if headers[name] != value:
                raise _bad(400, "conflicting Content-Length headers", "bad header")
        else:
            headers[name] = f"{headers[name]}, {value}"
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method.upper(), target, headers, peer=peer), keep_alive


class _Connection(asyncio.Protocol):
    """One client connection: buffers its bytes until a request is complete."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = bytearray()
        self.state = IDLE
        self.since = time.monotonic()
        self.request: Request | None = None
        self.keep_alive = True
        self.length = 0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    # asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.server._admit(self):
            return
        # A new connection gets the header clock: one that never sends is a slow client.
        self._wait(IDLE, self.server.limits.header_timeout, "no request sent")

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        if self.state == BUSY:  # pipelined bytes wait for the answer in progress
            self.transport.pause_reading()
            return
        self._advance()

    def connection_lost(self, exc) -> None:
        self._cancel_timer()
        if not self.closing and self.state in (HEADERS, BODY, BUSY):
            what = {HEADERS: "mid-headers", BODY: "mid-body", BUSY: "before its answer"}[self.state]
            kind = "reset" if isinstance(exc, ConnectionResetError) else "closed"
            self.server._dropped(self, f"client {kind} the connection {what}")
        elif not self.closing and self.state == IDLE and self.buffer:
            self.server._dropped(self, "client closed the connection mid-headers")
        self.closing = True
        self.server._forget(self)

    def pause_writing(self) -> None:
        self._cancel_timer()
        self.timer = self.server.loop.call_later(
            self.server.limits.write_timeout, self.drop, "write timeout: the answer was not read"
        )

    def resume_writing(self) -> None:
        self._cancel_timer()
        if self.state == IDLE and not self.closing:
            self._wait(IDLE, self.server.limits.idle_timeout, None)

    # request assembly ----------------------------------------------------
    def _advance(self) -> None:
        """Moves through headers and body as far as the buffer allows."""
        try:
            if self.state == IDLE and self.buffer:
                self._wait(HEADERS, self.server.limits.header_timeout, "header timeout")
            if self.state == HEADERS:
                self._read_head()
            if self.state == BODY and len(self.buffer) >= self.length:
                body = bytes(self.buffer[: self.length])
                del self.buffer[: self.length]
                self.request.body = body
                self._dispatch()
        except _BadRequest as e:
            self._answer_and_close(e.response, e.reason)

    def _read_head(self) -> None:
        limits = self.server.limits
        end = self.buffer.find(_END_OF_HEADERS)
        if end < 0:
            if len(self.buffer) > limits.max_header_bytes:
                message = f"request line and headers exceed {limits.max_header_bytes} bytes"
                raise _bad(431, message, "headers too large")
            return
        if end > limits.max_header_bytes:
            message = f"request line and headers exceed {limits.max_header_bytes} bytes"
            raise _bad(431, message, "headers too large")
        while self.buffer.startswith(b"\r\n"):  # tolerated before a request line (RFC 9112)
            del self.buffer[:2]
            end -= 2
        head = bytes(self.buffer[:end])
        del self.buffer[: end + len(_END_OF_HEADERS)]
        self.request, self.keep_alive = parse_head(head, self.peer)
        self.length = self._body_length(self.request)
        if self.length and self.request.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._wait(BODY, limits.body_timeout, "body timeout")

    def _body_length(self, request: Request) -> int:
        """Content-Length, checked: 411 for chunked or missing (POST/PUT), 413 over the limit."""
        limit = self.server.limits.max_body_bytes
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            message = "chunked bodies are not accepted; send Content-Length"
            raise _bad(411, message, "chunked body")
        length = request.headers.get("content-length")
        if length is None:
            if request.method in ("POST", "PUT", "PATCH"):
                raise _BadRequest(
                    json_error(411, "a Content-Length header is required", True), "no length"
                )
            return 0
        if not length.isdigit():
            raise _BadRequest(
                json_error(400, f"bad Content-Length {length[:30]!r}", True), "bad length"
            )
        if int(length) > limit:
            # Not read: closing the connection discards it.
            message = f"request body of {length} bytes exceeds the {limit}-byte limit"
            raise _bad(413, message, "body too large")
        return int(length)

    # handing over and answering -------------------------------------------
    def _dispatch(self) -> None:
        self._cancel_timer()
        self.state = BUSY
        self.server._waiting.pop(self, None)
        self.transport.pause_reading()
        request = self.request
        future = self.server.loop.run_in_executor(self.server.pool, self.server.call, request)
        future.add_done_callback(self._respond)

    def _respond(self, future) -> None:
        if self.closing:
            return
        response = future.result()  # `HttpServer.call` never raises
        keep_alive = self.keep_alive and not response.close
        self.transport.write(_encode(response, keep_alive))
        if not keep_alive:
            self.closing = True
            self.transport.close()  # after the buffered answer is written
            return
        self.request = None
        self.transport.resume_reading()
        self._wait(IDLE, self.server.limits.idle_timeout, None)
        if self.buffer:
            self._advance()

    def _answer_and_close(self, response: Response, reason: str) -> None:
        """A request the server refused before handling: answered, counted, closed."""
        self.server.refused[reason] += 1
        log.info("REST %s: %s (%d)", self.peer, reason, response.status)
        self.transport.write(_encode(response, keep_alive=False))
        self.closing = True
        self.server._waiting.pop(self, None)
        self._cancel_timer()
        self.transport.close()

    # timers and dropping -----------------------------------------------------
    def _wait(self, state: str, seconds: float, reason: str | None) -> None:
        """Enters ``state``; past ``seconds`` the connection is dropped for ``reason``.

        With ``reason`` None it is closed quietly instead: an idle keep-alive
        connection is no fault.
        """
        self._cancel_timer()
        self.state, self.since = state, time.monotonic()
        self.server._waiting_since(self)
        self.timer = self.server.loop.call_later(seconds, self._expire, reason)

    def _expire(self, reason: str | None) -> None:
        self.timer = None
        if reason is None:
            self.closing = True
            self.server._waiting.pop(self, None)
            self.transport.close()
        else:
            self.drop(reason)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def drop(self, reason: str) -> None:
        """Closes the connection at once (RST), with one log line and one count."""
        if self.closing:
            return
        self.closing = True
        self.server._waiting.pop(self, None)
        self._cancel_timer()
        self.server._dropped(self, reason)
        self.transport.abort()


class HttpServer:
    """Serves ``handler(Request) -> Response`` on an event loop thread and a bounded pool.

    Args:
        handler: Runs on a pool thread; an exception becomes a 500 JSON
            answer with one log line.
        host: Interface to bind.
        port: 0 picks a free port (see `port`).
        limits: Connection and thread bounds, timeouts, size limits.
        name: For thread names and log lines.

    Attributes:
        dropped: Connections dropped, by reason (timeouts, clients gone,
            evictions).
        refused: Requests answered with an error and closed before reaching
            the handler (oversized, malformed), by reason.
    """

    def __init__(
        self,
        handler: Callable[[Request], Response],
        host: str = "127.0.0.1",
        port: int = 0,
        limits: HttpLimits | None = None,
        name: str = "rest",
    ):
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.name = name
        self.dropped: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.connections: set[_Connection] = set()
        # Connections without a complete request, oldest wait first: eviction is O(1).
        self._waiting: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self.pool = ThreadPoolExecutor(
            self.limits.max_workers, thread_name_prefix=f"{name}-handler"
        )
        self.loop = asyncio.new_event_loop()
        self._server = self.loop.run_until_complete(
            self.loop.create_server(
                lambda: _Connection(self), host, port, backlog=1024, reuse_address=True
            )
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"{self.name}-loop", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, drops every connection, and stops the threads."""

        def shut():
            self._server.close()
            for connection in list(self.connections):
                connection.closing = True
                connection.transport.abort()
            self.loop.stop()

        if self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(shut)
            self._thread.join()
        else:  # never started: nothing is connected
            self._server.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.loop.close()

    def call(self, request: Request) -> Response:
        """The handler, with any exception turned into a 500 answer."""
        try:
            return self.handler(request)
        except Exception as e:  # the server keeps serving; the caller learns why
            log.exception("%s %s failed", request.method, request.path)
            return json_error(500, f"internal error: {type(e).__name__}: {e}")

    # connection bookkeeping (event loop thread only) ------------------------------
    def _admit(self, connection: _Connection) -> bool:
        """Registers a new connection, evicting a slow one when at the limit."""
        if len(self.connections) >= self.limits.max_connections:
            if self._waiting:
                victim = next(iter(self._waiting))
                victim.drop(f"evicted: {self.limits.max_connections} connections open")
            else:
                connection.closing = True
                self._dropped(
                    connection, f"refused: {self.limits.max_connections} connections busy"
                )
                body = json_error(503, "too many connections; retry later", True)
                connection.transport.write(_encode(body, keep_alive=False))
                connection.transport.close()
                return False
        self.connections.add(connection)
        return True

    def _waiting_since(self, connection: _Connection) -> None:
        """Keeps `_waiting` in order of `since` for connections in IDLE or HEADERS."""
        self._waiting.pop(connection, None)
        if connection.state in (IDLE, HEADERS) and not connection.closing:
            self._waiting[connection] = None

    def _forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self._waiting.pop(connection, None)

    def _dropped(self, connection: _Connection, reason: str) -> None:
        key = reason.split(":")[0]
        self.dropped[key] += 1
        log.warning(
            "%s: dropped connection from %s: %s", self.name.upper(), connection.peer, reason
        )
