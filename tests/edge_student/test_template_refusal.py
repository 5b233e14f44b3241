"""A chat template that refuses a conversation (`raise_exception`) is the caller's bad input on both tiers: the
edge answers INVALID_ARGUMENT / 400 naming `messages`, and a teacher's refusal never opens the edge's breaker."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc, teacher_pb2, teacher_pb2_grpc
from tests.conftest import running_edge, running_teacher
from tests.shared.test_prompt_formats import ALTERNATING_TEMPLATE


def conversation(*roles: str) -> common_pb2.Conversation:
    return common_pb2.Conversation(
        messages=[
            common_pb2.ChatMessage(role=role, content=f"Say something, turn {i}.") for i, role in enumerate(roles)
        ]
    )


@pytest.fixture
def template_file(tmp_path: Path) -> Path:
    path = tmp_path / "alternating.jinja"
    path.write_text(ALTERNATING_TEMPLATE)
    return path


async def test_the_students_refusal_is_invalid_argument_on_both_doors(
    edge_server: EdgeServer, template_file: Path
) -> None:
    async with running_edge(edge_server.settings.teacher_address, chat_template_file=template_file) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(edge_pb2.GenerateRequest(conversation=conversation("user", "user"), max_tokens=4))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "messages" in (caught.value.details() or "")
            fine = await stub.Generate(
                edge_pb2.GenerateRequest(conversation=conversation("user"), max_tokens=4, guidance_tokens=2)
            )
            assert fine.text
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}") as http:
            reply = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "gkt",
                    "max_tokens": 4,
                    "messages": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi."}],
                },
            )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "messages"


async def test_the_teachers_refusal_never_counts_against_it(edge_server: EdgeServer, template_file: Path) -> None:
    async with running_teacher(prompt_format="chat", chat_template_file=template_file) as teacher:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{teacher.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                call = teacher_pb2_grpc.TeacherServiceStub(channel).StreamGuidance(
                    teacher_pb2.GuidanceRequest(conversation=conversation("user", "user"), max_tokens=2)
                )
                async for _ in call:
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "messages" in (caught.value.details() or "")
        # The student's own template takes [user, user]; the teacher's does not. Five refusals, threshold 2.
        async with running_edge(teacher.port, breaker_failure_threshold=2, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                for _ in range(5):
                    answer = await stub.Generate(
                        edge_pb2.GenerateRequest(conversation=conversation("user", "user"), max_tokens=4)
                    )
                    assert answer.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR
                assert edge.breaker.state == "closed"
                healthy = await stub.Generate(
                    edge_pb2.GenerateRequest(conversation=conversation("user"), guidance_tokens=2, max_tokens=4)
                )
                assert not healthy.degraded
