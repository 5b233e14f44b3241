"""Every failure of the HTTP door in OpenAI's JSON error shape, with the HTTP status of its gRPC code, logged and
counted as the gRPC door's are (`report_failure`)."""

from __future__ import annotations

import logging
from typing import cast

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.authentication import AuthenticationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from edge_student.openai_convert import UnknownModelError, field_name
from edge_student.openai_http.auth import DeniedError
from edge_student.openai_http.paths import COUNTED_PATHS
from edge_student.openai_types import ErrorDetail, ErrorResponse
from shared.metrics import GktMetrics
from shared.protocol.errors import GktError, InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from shared.server.errors import http_status_for, report_failure, status_for

logger = logging.getLogger(__name__)

# OpenAI's error `type` for each status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",  # OpenAI's type for an unknown model (code `model_not_found`)
    429: "rate_limit_error",
    499: "cancelled",
    503: "service_unavailable",
    504: "timeout",
}


class OpenAIErrors:
    """Formats, logs and counts the HTTP door's failures; its methods are the app's exception handlers."""

    def __init__(self, metrics: GktMetrics) -> None:
        self._metrics = metrics

    def body(self, error: BaseException, path: str) -> ErrorResponse:
        """OpenAI's error body for a failure, counted and logged as the gRPC interceptor does."""
        code, message = report_failure(error, _method(path), self._metrics, api="openai", log=logger)
        status = http_status_for(code)
        return ErrorResponse(
            error=ErrorDetail(
                message=message,
                type=_ERROR_TYPES.get(status, "server_error"),
                param=getattr(error, "field", None),
                code="model_not_found" if isinstance(error, UnknownModelError) else code.name.lower(),
            )
        )

    def response(self, error: BaseException, path: str, headers: dict[str, str] | None = None) -> JSONResponse:
        status = http_status_for(status_for(error)[0])
        return JSONResponse(self.body(error, path).model_dump(mode="json"), status_code=status, headers=headers)

    def count_cancelled(self, path: str) -> None:
        """A client that went away mid-stream (nobody is left to send an error to)."""
        self._metrics.count_error(_method(path), grpc.StatusCode.CANCELLED.name, api="openai")

    def denied(self, conn: HTTPConnection, error: AuthenticationError) -> Response:
        """401 for a missing and a wrong token alike, as OpenAI and llama.cpp's server answer (the official client
        raises `AuthenticationError`); gRPC keeps UNAUTHENTICATED / PERMISSION_DENIED apart."""
        denial = error.error if isinstance(error, DeniedError) else GktError(str(error))
        if isinstance(denial, (UnauthenticatedError, PermissionDeniedError)):
            denial = UnauthenticatedError(str(denial))
        return self.response(denial, conn.url.path, {"WWW-Authenticate": "Bearer"})

    async def domain_error(self, request: Request, error: Exception) -> Response:
        return self.response(error, request.url.path)

    async def validation_error(self, request: Request, error: Exception) -> Response:
        """A body that does not parse or does not fit the request model: 400 naming the field, as gRPC does."""
        problems = cast(RequestValidationError, error).errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            invalid = InvalidArgumentError("body", f"is not valid JSON ({first.get('msg', '')})")
        else:
            invalid = InvalidArgumentError(field_name(first.get("loc", ())) or "body", str(first.get("msg", "")))
        return self.response(invalid, request.url.path)

    async def http_error(self, request: Request, error: Exception) -> Response:
        """Unknown paths and methods, in OpenAI's error shape (not counted: they are not requests to this API)."""
        http = cast(HTTPException, error)
        body = ErrorResponse(
            error=ErrorDetail(
                message=str(http.detail), type=_ERROR_TYPES.get(http.status_code, "invalid_request_error")
            )
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=http.status_code, headers=http.headers)

    async def unexpected_error(self, request: Request, error: Exception) -> Response:
        return self.response(error, request.url.path)


def _method(path: str) -> str:
    return path if path in COUNTED_PATHS else "other"
