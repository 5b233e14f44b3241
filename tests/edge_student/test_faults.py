"""Faults with real processes: the teacher killed before and during a stream, hanging, restarted; the breaker."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from shared.launch import ServiceProcess, launch_teacher
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, running_edge, running_teacher


def chat(question: str, **fields: object) -> edge_pb2.GenerateRequest:
    messages = [common_pb2.ChatMessage(role="user", content=question)]
    return edge_pb2.GenerateRequest(conversation=common_pb2.Conversation(messages=messages), **fields)


def start_teacher(port: int) -> ServiceProcess:
    teacher = launch_teacher(
        "llamacpp", ["--model", "gemma3-270m", "--n-threads", "1", "--log-level", "WARNING"], port=port
    )
    teacher.wait_ready(timeout=120)
    return teacher


async def metric(port: int | None, name: str) -> float:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name))


async def test_teacher_killed_hung_restarted_and_the_breaker() -> None:
    port = closed_port()
    teacher = await asyncio.to_thread(start_teacher, port)
    try:
        async with running_edge(
            port, breaker_failure_threshold=2, breaker_reset_seconds=3.0, guidance_first_token_timeout_seconds=5.0
        ) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                healthy = await stub.Generate(chat("What is wind?", guidance_tokens=4, max_tokens=6))
                assert not healthy.degraded

                # Killed in the middle of a stream: the student finishes from the guidance that arrived.
                long_guidance = chat(
                    "Tell me everything about the history of Rome.", guidance_tokens=400, max_tokens=416
                )
                call = stub.GenerateStream(long_guidance)
                guidance_so_far = ""
                final = None
                async for chunk in call:
                    if chunk.HasField("final"):
                        final = chunk.final
                    elif chunk.delta.segment == edge_pb2.SEGMENT_GUIDANCE:
                        guidance_so_far += chunk.delta.text
                        if len(guidance_so_far) > 20 and teacher.process.poll() is None:
                            teacher.process.kill()
                assert final is not None
                assert final.degraded and final.degraded_reason == edge_pb2.DEGRADED_REASON_UNAVAILABLE
                assert final.guidance_text == guidance_so_far and len(final.guidance_text) > 20
                assert final.text.startswith(final.guidance_text) and final.student_text
                # Each delta carries the running usage: what the dead teacher wrote before it died is counted.
                assert final.usage.teacher_completion_tokens > 0 and final.usage.teacher_prompt_tokens > 0
                assert final.guidance_end == edge_pb2.GUIDANCE_END_TEACHER_FAILED

                # Killed before the stream: the breaker now opens (2 failures) and answers skip the teacher.
                down = await stub.Generate(chat("What is rain?", guidance_tokens=4, max_tokens=6))
                assert down.degraded and down.degraded_reason == edge_pb2.DEGRADED_REASON_UNAVAILABLE
                started = time.monotonic()
                skipped = await stub.Generate(chat("What is snow?", guidance_tokens=4, max_tokens=6))
                assert skipped.degraded and skipped.degraded_reason == edge_pb2.DEGRADED_REASON_CIRCUIT_OPEN
                assert time.monotonic() - started < 5
                assert edge.breaker.state == "open"
                assert await metric(edge.grpc.metrics_port, "gkt_teacher_circuit_open{") == 1

                # Restarted on the same port: after the reset period a trial call closes the breaker.
                teacher = await asyncio.to_thread(start_teacher, port)
                await asyncio.sleep(3.2)
                recovered = None
                for _ in range(20):  # the channel may still be backing off from the refused connections
                    recovered = await stub.Generate(chat("What is hail?", guidance_tokens=4, max_tokens=6))
                    if not recovered.degraded:
                        break
                    await asyncio.sleep(0.5)
                assert recovered is not None and not recovered.degraded, recovered.degraded_reason
                assert edge.breaker.state == "closed"
                assert await metric(edge.grpc.metrics_port, "gkt_teacher_circuit_open{") == 0
                degraded = await metric(edge.grpc.metrics_port, "gkt_degraded_requests_total{")
                assert degraded == 3
    finally:
        teacher.stop()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (no HTTP/2, no gRPC)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    server.settimeout(0.1)

    def accept_forever() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    import threading

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for connection in accepted:
        connection.close()


async def test_hanging_teacher_hits_the_deadline(silent_listener: int) -> None:
    async with running_edge(
        silent_listener, guidance_first_token_timeout_seconds=1.0, guidance_timeout_seconds=2.0
    ) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            started = time.monotonic()
            response = await edge_pb2_grpc.EdgeServiceStub(channel).Generate(
                chat("What is fog?", guidance_tokens=4, max_tokens=6), timeout=30
            )
    assert time.monotonic() - started < 10
    assert response.degraded and response.degraded_reason in (
        edge_pb2.DEGRADED_REASON_DEADLINE,
        edge_pb2.DEGRADED_REASON_UNAVAILABLE,
    )
    assert response.student_text


async def test_the_breaker_counts_only_the_teachers_own_failures() -> None:
    """Short app deadlines and prompts the teacher rejects are the caller's doing: the breaker stays closed. Three
    real teacher failures (it is gone) open it."""
    async with running_teacher(max_prompt_chars=300) as teacher:
        async with running_edge(teacher.port, breaker_failure_threshold=3, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                for i in range(20):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.Generate(chat(f"Tell me about rivers, part {i}.", max_tokens=64), timeout=0.05)
                    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.sleep(0.5)  # let the edge see its teacher calls end
                for i in range(10):
                    rejected = await stub.Generate(chat(f"{i} " + "Why is the sea salty? " * 20, max_tokens=4))
                    assert rejected.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR  # teacher: INVALID_ARGUMENT
                assert edge.breaker.state == "closed"
                await teacher.stop(grace=0)
                for _ in range(3):
                    gone = await stub.Generate(chat("Are you there?", max_tokens=4), timeout=30)
                    assert gone.degraded_reason == edge_pb2.DEGRADED_REASON_UNAVAILABLE
                assert edge.breaker.state == "open"
                skipped = await stub.Generate(chat("And now?", max_tokens=4), timeout=30)
                assert skipped.degraded_reason == edge_pb2.DEGRADED_REASON_CIRCUIT_OPEN
