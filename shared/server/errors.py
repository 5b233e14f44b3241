"""The one place that maps domain errors (`shared/protocol/errors.py`) to status codes: gRPC's, and HTTP's for the
edge's OpenAI-compatible door."""

from __future__ import annotations

import logging

import grpc

from shared.metrics import Api, GktMetrics
from shared.protocol.errors import (
    BackendError,
    ClientGoneError,
    DeadlineExceededError,
    GktError,
    InvalidArgumentError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnimplementedError,
)

# The gRPC status of each domain error; a subclass takes its nearest listed ancestor's (a bare GktError: INTERNAL).
_GRPC_STATUS: dict[type[GktError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
    BackendError: grpc.StatusCode.UNAVAILABLE,
    ClientGoneError: grpc.StatusCode.CANCELLED,
}


def grpc_status_of(error: GktError) -> grpc.StatusCode:
    """The gRPC status code that stands for a domain error."""
    for kind in type(error).__mro__:
        if kind in _GRPC_STATUS:
            return _GRPC_STATUS[kind]
    return grpc.StatusCode.INTERNAL


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message to send for an exception raised while serving a request."""
    if isinstance(error, GktError):
        return grpc_status_of(error), str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


def report_failure(
    error: BaseException, method: str, metrics: GktMetrics, *, api: Api, log: logging.Logger
) -> tuple[grpc.StatusCode, str]:
    """Logs a failed request at the level it deserves (the caller's mistakes at INFO, the server's in full), counts
    it per method and code, and returns the status code and message to send; both doors report failures here."""
    code, message = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", method, exc_info=error)
    elif isinstance(error, InvalidArgumentError):
        log.info("%s: %s: %s", method, code.name, message)
    else:
        log.warning("%s: %s: %s", method, code.name, message)
    metrics.count_error(method, code.name, api=api)
    return code, message


# The HTTP status for each gRPC code a request can end with (as gRPC's own HTTP mapping and OpenAI's API use them);
# 499 is the de-facto "client closed the request" status, for logs and metrics only (nobody is left to read it).
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status that stands for a gRPC status code (500 for anything unexpected)."""
    return _HTTP_STATUS.get(code, 500)
