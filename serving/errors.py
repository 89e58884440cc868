"""One error type for the server and the client, carrying a gRPC status code.

TF Serving answers every failure with a canonical status code; its REST
gateway maps that code to an HTTP status and a ``{"error": "..."}`` body.
Keeping the code (not an HTTP number) lets the REST and gRPC front ends of
`doctags serve` report the same failure the same way TF Serving does.
"""

from __future__ import annotations

# tensorflow_serving/util/net_http/... ToHTTPStatusCode, as TF Serving maps them.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A failed serving call: a canonical status ``code`` and a message for humans.

    Attributes:
        code: gRPC status code name, e.g. ``INVALID_ARGUMENT``.
        message: What went wrong, phrased for the caller.
        http_status: The HTTP status a REST server answers with (or answered).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def invalid(message: str) -> ServingError:
    """A request the caller must fix (HTTP 400)."""
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    """An unknown model, version or signature (HTTP 404)."""
    return ServingError("NOT_FOUND", message)
