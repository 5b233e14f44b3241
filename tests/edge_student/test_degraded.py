"""Teacher down or too slow: the edge still answers, student-only (from the guidance it has), marked degraded."""

from __future__ import annotations

import time

import grpc

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, running_edge
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

QUESTION = common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="Name three colours.")])
REQUEST = edge_pb2.GenerateRequest(conversation=QUESTION, guidance_tokens=10, max_tokens=12)


async def ask(port: int, request: edge_pb2.GenerateRequest = REQUEST) -> edge_pb2.GenerateResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await edge_pb2_grpc.EdgeServiceStub(channel).Generate(request, timeout=60)


async def test_teacher_down_answers_student_only_degraded() -> None:
    async with running_edge(closed_port()) as edge:
        started = time.monotonic()
        response = await ask(edge.port)
        assert time.monotonic() - started < 20
        assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_UNAVAILABLE
        assert response.guidance_text == "" and response.student_text
        assert response.usage.teacher_completion_tokens == 0
        teacher_only = await ask(
            edge.port,
            edge_pb2.GenerateRequest(conversation=QUESTION, mode=edge_pb2.MODE_TEACHER_ONLY, max_tokens=8),
        )
        assert teacher_only.degraded and teacher_only.student_text


async def test_teacher_slower_than_first_token_deadline() -> None:
    hanging = ScriptedTeacher(["never"], hang_after=0)
    server, port = await start_fake_teacher(hanging)
    try:
        async with running_edge(port, guidance_first_token_timeout_seconds=0.5) as edge:
            started = time.monotonic()
            response = await ask(edge.port)
            assert time.monotonic() - started < 10
            assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_DEADLINE
            assert response.guidance_text == "" and response.student_text
            assert hanging.calls >= 1
    finally:
        await server.stop(0)


async def test_guidance_cut_by_total_deadline_keeps_what_arrived() -> None:
    stalling = ScriptedTeacher([" Red", ",", " green", " and"], hang_after=2)
    server, port = await start_fake_teacher(stalling)
    try:
        async with running_edge(port, guidance_timeout_seconds=1.0) as edge:
            response = await ask(edge.port)
            assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_DEADLINE
            assert response.guidance_text == " Red,"
            assert response.text.startswith(" Red,") and response.student_text
    finally:
        await server.stop(0)
