"""Domain errors and the one place that maps them to gRPC status codes."""

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


class OverloadedError(GktError):
    """No capacity now; the caller may retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReadyError(GktError):
    """The server is starting or shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(GktError):
    """The call carries no credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(GktError):
    """The call's credentials are not accepted."""

    code = grpc.StatusCode.PERMISSION_DENIED


class BackendError(GktError):
    """The model backend failed in a way the caller cannot fix (logged in full on the server)."""

    code = grpc.StatusCode.UNAVAILABLE


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message to send for an exception raised while serving a request."""
    if isinstance(error, GktError):
        return error.code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"
