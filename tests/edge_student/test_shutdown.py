"""SIGTERM under load, on a real edge process: health flips, accepted requests finish, new ones get UNAVAILABLE (and
the OpenAI-compatible HTTP door, on the same loop, closes with it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_teacher.server import TeacherServer
from edge_student.client import build_request
from edge_student.server import EdgeServer
from shared.launch import launch_edge
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, edge_settings


async def in_system(metrics_port: int | None) -> float:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    return sum(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith(("gkt_num_requests_running{", "gkt_num_requests_waiting{"))
    )


async def test_sigterm_during_load(teacher_server: TeacherServer) -> None:
    edge = launch_edge(
        f"127.0.0.1:{teacher_server.port}",
        ["--model", "smollm2-135m", "--n-slots", "2", "--shutdown-grace-seconds", "60", "--log-level", "WARNING"],
        metrics_port=0,
        http_port=0,
    )
    await asyncio.to_thread(edge.wait_ready, 120)
    address = f"127.0.0.1:{edge.port}"
    assert edge.http_port, "the ready file reports the HTTP port"
    health_url = f"http://127.0.0.1:{edge.http_port}/health"
    async with httpx.AsyncClient() as http:
        assert (await http.get(health_url)).status_code == 200
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            requests = [
                edge_pb2.GenerateRequest(
                    conversation=common_pb2.Conversation(
                        messages=[common_pb2.ChatMessage(role="user", content=f"Write a story about the number {i}.")]
                    ),
                    mode=edge_pb2.MODE_GKT if i % 2 else edge_pb2.MODE_STUDENT_ONLY,
                    guidance_tokens=4,
                    max_tokens=40,
                )
                for i in range(6)
            ]
            accepted = [asyncio.ensure_future(stub.Generate(r, timeout=120)) for r in requests]
            for _ in range(200):
                if await in_system(edge.metrics_port) == len(accepted):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the requests were not all accepted")
            edge.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)

            # The HTTP door says so too, or is already closed.
            async with httpx.AsyncClient() as http:
                with contextlib.suppress(httpx.TransportError):
                    assert (await http.get(health_url, timeout=2)).status_code == 503

            # Health says NOT_SERVING (or the listener is already closed) and new calls are refused.
            try:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            for new_channel in (False, True):
                late_channel = grpc.aio.insecure_channel(address) if new_channel else channel
                try:
                    await edge_pb2_grpc.EdgeServiceStub(late_channel).Generate(requests[0], timeout=5)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                else:
                    raise AssertionError("a request was accepted after SIGTERM")
                finally:
                    if new_channel:
                        await late_channel.close()

            responses = await asyncio.gather(*accepted)
        assert all(r.text and r.finish_reason != common_pb2.FINISH_REASON_CANCELLED for r in responses), responses
        assert await asyncio.to_thread(edge.process.wait, 60) == 0
    finally:
        edge.stop()


async def test_requests_before_warm_up_is_done_get_unavailable_not_an_answer() -> None:
    """While the edge loads and warms its student (health NOT_SERVING), every request is refused at once with
    UNAVAILABLE, as the teacher does, instead of being queued and answered slowly."""
    edge = EdgeServer(edge_settings(closed_port(), n_slots=4))
    await edge.listen()
    loading = asyncio.ensure_future(edge.load())
    outcomes: list[tuple[float, grpc.StatusCode]] = []  # (answered at, status)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            request = build_request("Hi", "student", max_tokens=1)

            async def one() -> None:
                try:
                    await stub.Generate(request, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                outcomes.append((time.monotonic(), code))

            while not loading.done():
                await asyncio.gather(*(one() for _ in range(4)))
        await loading
    finally:
        await edge.stop(grace=0)
    assert edge.grpc.serving_since is not None
    before = [code for answered_at, code in outcomes if answered_at < edge.grpc.serving_since]
    assert len(before) >= 8, "too few requests landed while the edge was loading to tell"
    assert set(before) == {grpc.StatusCode.UNAVAILABLE}, f"answered before the edge was SERVING: {before}"
