"""Domain errors and the one place that maps them to status codes: gRPC's, and HTTP's for the edge's OpenAI facade."""

from __future__ import annotations

import grpc


class GktError(Exception):
    """A failure with a gRPC status and a message meant for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgumentError(GktError):
    """The request is malformed; `field` names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class OverloadedError(GktError):
    """No capacity now; the caller may retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFoundError(GktError):
    """The caller named something that does not exist (e.g. a model the facade does not serve)."""

    code = grpc.StatusCode.NOT_FOUND


class DeadlineExceededError(GktError):
    """The caller's deadline passed before the answer was complete."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotReadyError(GktError):
    """The server is starting or shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(GktError):
    """The call carries no credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(GktError):
    """The call's credentials are not accepted."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnimplementedError(GktError):
    """The server cannot do what was asked (e.g. a teacher backend that cannot score a draft for `Verify`)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class BackendError(GktError):
    """The model backend failed in a way the caller cannot fix (logged in full on the server)."""

    code = grpc.StatusCode.UNAVAILABLE


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message to send for an exception raised while serving a request."""
    if isinstance(error, GktError):
        return error.code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


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
