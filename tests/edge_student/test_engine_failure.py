"""An engine thread that dies fails its requests loudly and takes the edge out of service (real student, real
gRPC; the failure is injected through the engine's test hook, as an unexpected bug would strike)."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.catalog import resolve_gguf
from shared.llama.engine import BatchedLlamaEngine, EngineConfig, SamplingParams
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, running_edge, wait_until


def fail_next_step(engine: BatchedLlamaEngine, error: BaseException) -> None:
    """Makes the engine thread raise `error` at its next step, as an unexpected bug would."""

    def broken() -> list[object]:
        raise error

    engine._build_batch = broken  # type: ignore[method-assign]


def story(mode: int = edge_pb2.MODE_STUDENT_ONLY) -> edge_pb2.GenerateRequest:
    message = common_pb2.ChatMessage(role="user", content="Tell me a very long story about a lighthouse.")
    return edge_pb2.GenerateRequest(conversation=common_pb2.Conversation(messages=[message]), mode=mode, max_tokens=400)


async def test_a_dead_engine_thread_fails_requests_and_turns_health_not_serving() -> None:
    async with running_edge(closed_port()) as edge:
        assert edge.engine is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            call = stub.GenerateStream(story())
            async for chunk in call:
                if chunk.HasField("delta"):
                    break  # the student is writing
            fail_next_step(edge.engine, RuntimeError("injected engine bug"))

            async def drain() -> None:
                async for _ in call:
                    pass

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(drain(), 30)  # a silently dead engine leaves the stream hanging
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "engine failed" in caught.value.details() and "injected engine bug" in caught.value.details()

            async def not_serving() -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

            for _ in range(100):
                if await not_serving():
                    break
                await asyncio.sleep(0.05)
            assert await not_serving(), "health still says SERVING after the engine died"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Generate(story(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "a new request must not hang"


async def test_close_does_not_free_the_context_while_the_engine_thread_runs() -> None:
    config = EngineConfig(model_path=resolve_gguf("smollm2-135m"), n_slots=1, n_ctx_per_slot=256)
    engine = BatchedLlamaEngine(config)
    stuck, release = threading.Event(), threading.Event()

    def stick(_: int) -> None:  # the step observer runs inside a decode step: hold the thread there
        stuck.set()
        release.wait()

    engine._step_observer = stick
    sequence = engine.submit("Hello", SamplingParams(max_tokens=4))
    await asyncio.to_thread(stuck.wait, 30)
    engine.close(join_seconds=0.2)
    assert engine._ctx is not None, "the context was freed under a running thread"
    release.set()
    await wait_until(lambda: not engine._thread.is_alive(), within=30)
    await sequence.wait()
    engine.close()
    assert engine._ctx is None
