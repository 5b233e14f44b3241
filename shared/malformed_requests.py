"""Undecodable request bytes (corrupt protobuf, invalid UTF-8 in a string) get INVALID_ARGUMENT, not UNKNOWN."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from shared.metrics import GktMetrics

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


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler so a parse failure becomes a clear INVALID_ARGUMENT."""

    def __init__(self, metrics: GktMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        method = (details.method or "").rsplit("/", 1)[-1]

        async def reject(request: MalformedRequest, context: grpc.aio.ServicerContext) -> None:
            self._metrics.count_error(method, grpc.StatusCode.INVALID_ARGUMENT.name)
            logger.warning("%s: undecodable request (%s)", method, request.problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid message ({request.problem})")

        if handler.response_streaming:
            inner_stream = handler.unary_stream

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, MalformedRequest):
                    await reject(request, context)
                    return
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        inner_unary = handler.unary_unary

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, MalformedRequest):
                await reject(request, context)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded_unary,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
