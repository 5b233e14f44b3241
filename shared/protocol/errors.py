"""Domain errors: what went wrong, in words a caller can act on; no transport here (`shared/server/errors.py` maps
each to a gRPC status, and to an HTTP status for the edge's OpenAI-compatible door)."""

from __future__ import annotations


class GktError(Exception):
    """A failure with a message meant for the caller (any other exception is an internal error)."""


class InvalidArgumentError(GktError):
    """The request is malformed; `field` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class OverloadedError(GktError):
    """No capacity now; the caller may retry later."""


class NotFoundError(GktError):
    """The caller named something that does not exist (e.g. a model the facade does not serve)."""


class DeadlineExceededError(GktError):
    """The caller's deadline passed before the answer was complete."""


class NotReadyError(GktError):
    """The server is starting or shutting down."""


class UnauthenticatedError(GktError):
    """The call carries no credentials."""


class PermissionDeniedError(GktError):
    """The call's credentials are not accepted."""


class UnimplementedError(GktError):
    """The server cannot do what was asked (e.g. a teacher backend that cannot score a draft for `Verify`)."""


class BackendError(GktError):
    """The model backend failed in a way the caller cannot fix (logged in full on the server)."""


class ClientGoneError(GktError):
    """The caller disconnected before its answer was complete (counted as cancelled)."""
