"""The one place where a failed call becomes a gRPC status: domain errors mapped, logged and counted.

Servicers and interceptors raise `GktError`s (or anything else, which becomes INTERNAL); this interceptor turns
each into its status code and message, logs it at the level it deserves and counts it in `gkt_request_errors_total`.
Undecodable request bytes (corrupt protobuf, invalid UTF-8 in a string) become INVALID_ARGUMENT here too, not UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError

from shared.metrics import GktMetrics
from shared.protocol.errors import InvalidArgumentError
from shared.server.errors import report_failure
from shared.server.request_context import outcome_counted

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request whose bytes did not parse."""

    problem: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            return MalformedRequest(str(error)[:200])

    return parse


def _check_decoded(request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgumentError("request", f"not a valid message ({request.problem})")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler: failures become statuses, logged and counted per method and code."""

    def __init__(self, metrics: GktMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.request_streaming:  # no client-streaming methods in this protocol
            return handler
        method = (details.method or "").rsplit("/", 1)[-1]
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._guard_stream(method, cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._guard_unary(method, cast(Callable[..., Awaitable[Any]], handler.unary_unary)),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _guard_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                _check_decoded(request)
                return await behavior(request, context)
            except asyncio.CancelledError:
                if not outcome_counted.get():
                    self._metrics.count_error(method, grpc.StatusCode.CANCELLED.name, api="grpc")
                raise
            except grpc.aio.AbortError:
                raise  # a status set by the handler itself (already sent)
            except Exception as error:
                await self._abort(context, method, error)

        return guarded

    def _guard_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                _check_decoded(request)
                async for item in behavior(request, context):
                    yield item
            except asyncio.CancelledError:
                if not outcome_counted.get():  # cancelled after its answer was counted: one outcome, the success
                    self._metrics.count_error(method, grpc.StatusCode.CANCELLED.name, api="grpc")
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await self._abort(context, method, error)

        return guarded

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], method: str, error: Exception) -> NoReturn:
        code, message = report_failure(error, method, self._metrics, api="grpc", log=logger)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")
