"""Per-request metadata: the request id (for logs) and the edge's mode (for metrics), which travel between tiers, and
whether this call's outcome was already counted."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import Any

import grpc

from shared.server.logging_setup import request_id_var

REQUEST_ID_KEY = "x-request-id"
MODE_KEY = "x-gkt-mode"
_MAX_ID_LENGTH = 64
# Set once a call's answer has been counted as a success: a client that goes away while the last bytes are sent
# must not be counted as cancelled as well (each gRPC call runs in its own task, so its own context).
outcome_counted: ContextVar[bool] = ContextVar("outcome_counted", default=False)


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def accept_request_id(given: str) -> str:
    """The caller's request id when it is usable (else a fresh one), put in the log context of this call."""
    request_id = given if given.isprintable() and 0 < len(given) <= _MAX_ID_LENGTH else uuid.uuid4().hex[:16]
    request_id_var.set(request_id)
    return request_id


def bind_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Takes the caller's request id (or makes one), puts it in the log context and echoes it back."""
    request_id = accept_request_id(_metadata(context).get(REQUEST_ID_KEY, ""))
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return request_id


def caller_mode(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The edge's mode for this guidance request (a metrics label), or 'direct' for other callers."""
    mode = _metadata(context).get(MODE_KEY, "direct")
    return mode if mode in ("gkt", "teacher_only", "student_only") else "direct"
