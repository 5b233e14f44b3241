"""The edge serving many users at once over gRPC: concurrency, cancellation, deadlines, overload, leaks, overlap."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from edge_student.server import EdgeServer
from shared.launch import launch_edge
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import counter_total, running_edge, wait_until
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

TOPICS = ["rivers", "volcanoes", "bread", "bicycles", "the moon", "honey bees", "glass", "chess"]


def ask(topic: str, **fields: object) -> edge_pb2.GenerateRequest:
    message = common_pb2.ChatMessage(role="user", content=f"Tell me about {topic}.")
    return edge_pb2.GenerateRequest(conversation=common_pb2.Conversation(messages=[message]), **fields)


def stub_for(server: EdgeServer, channel: grpc.aio.Channel | None = None) -> edge_pb2_grpc.EdgeServiceStub:
    return edge_pb2_grpc.EdgeServiceStub(channel or grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))


def slots_free(server: EdgeServer) -> bool:
    assert server.engine is not None
    stats = server.engine.stats()
    return stats.free_slots == stats.n_slots and stats.waiting == 0 and stats.kv_cells_used == 0


async def test_eight_concurrent_requests_complete(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub
) -> None:
    modes = [edge_pb2.MODE_GKT, edge_pb2.MODE_STUDENT_ONLY] * 4
    responses = await asyncio.gather(
        *(
            edge_stub.Generate(ask(topic, mode=mode, guidance_tokens=6, max_tokens=16))
            for topic, mode in zip(TOPICS, modes, strict=True)
        )
    )
    for response, mode in zip(responses, modes, strict=True):
        assert response.mode == mode and not response.degraded
        assert response.text == response.guidance_text + response.student_text
        assert response.student_text.strip()
        assert 0 < response.usage.student_completion_tokens <= 16
        if mode == edge_pb2.MODE_GKT:
            assert 0 < response.usage.teacher_completion_tokens <= 6
    await wait_until(lambda: slots_free(edge_server))


async def test_deadline_and_cancel_free_the_slot(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub
) -> None:
    long = ask("the history of mathematics", mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=800)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stub.Generate(long, timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: slots_free(edge_server))

    call = edge_stub.GenerateStream(long)
    async for _ in call:
        break  # the student is generating now
    assert edge_server.engine is not None and edge_server.engine.stats().running >= 1
    call.cancel()
    await wait_until(lambda: slots_free(edge_server))


async def test_full_queue_is_resource_exhausted(teacher_server) -> None:  # type: ignore[no-untyped-def]
    async with running_edge(teacher_server.port, n_slots=1, max_queue=1) as edge:
        stub = stub_for(edge)
        long = ask("oceans", mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=400)
        first = asyncio.ensure_future(stub.Generate(long))
        second = asyncio.ensure_future(stub.Generate(long))
        await wait_until(lambda: edge.engine is not None and edge.engine.stats().waiting == 1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(long)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "slots are busy" in caught.value.details()
        first.cancel()
        second.cancel()
        await wait_until(lambda: slots_free(edge))


async def test_prefill_overlaps_a_slow_guidance_stream() -> None:
    delay = 0.3
    slow = ScriptedTeacher([" Rivers", " carry", " water", " to", " the", " sea"], delay=delay)
    server, port = await start_fake_teacher(slow)
    try:
        async with running_edge(port) as edge:
            response = await stub_for(edge).Generate(ask("rivers", guidance_tokens=6, max_tokens=8))
            t = response.timings
            assert not response.degraded and response.guidance_text == " Rivers carry water to the sea"
            assert t.student_prompt_prefilled_seconds > 0
            # The last delta left the teacher `delay` seconds after the one before it, so the prompt was
            # prefilled while guidance was still on its way.
            assert t.student_prompt_prefilled_seconds < t.guidance_wait_seconds - delay, t
    finally:
        await server.stop(0)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of process `pid`, from its own clock in /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime and stime, in clock ticks


async def test_waiting_for_guidance_costs_no_cpu() -> None:
    """A sequence whose prompt is open and waiting for more guidance must not spin the engine thread. The edge runs
    as its own process, so its CPU clock counts its threads only (the engine's, the event loop's and gRPC's), not
    this test process's."""
    pausing = ScriptedTeacher([" Rivers", " carry", " water", " to", " the", " sea"], pause_after=3, pause_seconds=3.0)
    server, port = await start_fake_teacher(pausing)
    edge = launch_edge(f"127.0.0.1:{port}", ["--model", "smollm2-135m", "--n-threads", "1", "--log-level", "WARNING"])
    try:
        await asyncio.to_thread(edge.wait_ready, 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            call = asyncio.ensure_future(stub.Generate(ask("rivers", guidance_tokens=6, max_tokens=10), timeout=60))
            await asyncio.wait_for(pausing.paused.wait(), 30)
            await asyncio.sleep(0.5)  # the edge prefills the prompt and the guidance it has, then waits
            cpu, wall = process_cpu_seconds(edge.process.pid), time.monotonic()
            await asyncio.sleep(2.0)
            cpu, wall = process_cpu_seconds(edge.process.pid) - cpu, time.monotonic() - wall
            response = await call
            assert response.guidance_text == " Rivers carry water to the sea" and not response.degraded
            assert cpu < 0.1 * wall, f"{cpu:.2f}s of the edge's CPU in {wall:.2f}s of waiting for guidance"
    finally:
        edge.stop()
        await server.stop(0)


async def test_student_prefill_is_counted_when_the_teacher_finishes_the_answer() -> None:
    """The teacher ends the answer within K: the student writes nothing, but the prompt it prefilled meanwhile is
    work it did, reported in usage and counted in the metrics and the cost."""
    finishing = ScriptedTeacher([" Rivers", " flow", "."], delay=0.2, finish_reason=common_pb2.FINISH_REASON_STOP)
    server, port = await start_fake_teacher(finishing)
    try:
        async with running_edge(port) as edge:
            before = counter_total(edge.metrics.registry, "gkt_prompt_tokens")
            cost_before = counter_total(edge.metrics.registry, "gkt_cost")
            response = await stub_for(edge).Generate(ask("rivers", guidance_tokens=10, max_tokens=8))
            assert response.guidance_text == " Rivers flow." and response.student_text == ""
            assert response.finish_reason == common_pb2.FINISH_REASON_STOP
            assert response.usage.student_prompt_tokens > 0 and response.usage.student_completion_tokens == 0
            assert counter_total(edge.metrics.registry, "gkt_prompt_tokens") - before == (
                response.usage.student_prompt_tokens
            )
            student_cost = edge.settings.prices().student.cost(
                response.usage.student_prompt_tokens, 0, response.usage.student_cached_prompt_tokens
            )
            assert counter_total(edge.metrics.registry, "gkt_cost") - cost_before >= student_cost > 0
            await wait_until(lambda: slots_free(edge))
    finally:
        await server.stop(0)


async def test_client_cancel_aborts_the_teacher_request(
    teacher_server,
    edge_server: EdgeServer,  # type: ignore[no-untyped-def]
    edge_stub: edge_pb2_grpc.EdgeServiceStub,
) -> None:
    call = edge_stub.GenerateStream(ask("the history of the world", guidance_tokens=500, max_tokens=508))
    async for chunk in call:
        if chunk.delta.segment == edge_pb2.SEGMENT_GUIDANCE:
            break  # the teacher is generating guidance for us now
    assert teacher_server.backend.occupancy()[0] == 1
    call.cancel()
    # The edge stops reading, cancels its teacher call, and the teacher's engine drops the sequence.
    await wait_until(lambda: teacher_server.backend.occupancy() == (0, 0))
    await wait_until(lambda: slots_free(edge_server))
