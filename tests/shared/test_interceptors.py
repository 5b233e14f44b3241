"""The gRPC error interceptor counts each call's outcome once: a client that goes away after its answer was counted
as a success is not counted as cancelled too (a real gRPC server on 127.0.0.1:0, a scripted servicer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from shared.metrics import GktMetrics
from shared.protocol.gkt.v1 import edge_pb2, edge_pb2_grpc
from shared.server.interceptors import ErrorInterceptor
from shared.server.request_context import outcome_counted


class LingeringServicer(edge_pb2_grpc.EdgeServiceServicer):
    """Sends the final chunk, then lingers (as a server does while the last bytes go out) until cancelled."""

    def __init__(self, *, counts_its_answer: bool) -> None:
        self.counts_its_answer = counts_its_answer
        self.sent = asyncio.Event()
        self.ended = asyncio.Event()

    async def GenerateStream(  # noqa: N802
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[edge_pb2.GenerateStreamChunk]:
        try:
            if self.counts_its_answer:
                outcome_counted.set(True)  # what EdgeService.finish does once the answer is accounted
            yield edge_pb2.GenerateStreamChunk(final=edge_pb2.GenerateResponse(text="done"))
            self.sent.set()
            await asyncio.Event().wait()
            yield edge_pb2.GenerateStreamChunk()
        finally:
            self.ended.set()


def cancelled_count(metrics: GktMetrics) -> float:
    return sum(
        sample.value
        for metric in metrics.registry.collect()
        if metric.name == "gkt_request_errors"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("code") == "CANCELLED"
    )


@pytest.mark.parametrize(("counts_its_answer", "expected"), [(True, 0), (False, 1)])
async def test_a_disconnect_after_the_answer_was_counted_is_not_counted_again(
    counts_its_answer: bool, expected: int
) -> None:
    metrics = GktMetrics("edge")
    servicer = LingeringServicer(counts_its_answer=counts_its_answer)
    server = grpc.aio.server(interceptors=[ErrorInterceptor(metrics)])
    edge_pb2_grpc.add_EdgeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = edge_pb2_grpc.EdgeServiceStub(channel).GenerateStream(edge_pb2.GenerateRequest(prompt="hi"))
            async for chunk in call:
                assert chunk.final.text == "done"
                break
            await servicer.sent.wait()
            call.cancel()
        await asyncio.wait_for(servicer.ended.wait(), 10)  # the server noticed the cancellation
        await asyncio.sleep(0.1)  # and the interceptor around the handler has run
    finally:
        await server.stop(grace=0)
    assert cancelled_count(metrics) == expected
