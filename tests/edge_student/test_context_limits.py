"""A request that cannot fit the student's context is refused before any work; text that overflows anyway ends
the answer with finish_reason=length (real student, scripted teacher: the guidance's size is the subject)."""

from __future__ import annotations

import grpc
import pytest

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

CONTEXT = 256


def words(n: int) -> str:
    return "word " * n  # about one SmolLM2 token a word


async def test_prompt_that_fits_alone_but_not_with_guidance_and_max_tokens_is_refused_up_front() -> None:
    teacher = ScriptedTeacher([" and"] * 40)
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, n_ctx_per_slot=CONTEXT) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                request = edge_pb2.GenerateRequest(prompt=words(230), guidance_tokens=40, max_tokens=4)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Generate(request)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith("max_tokens:")
                assert "guidance_tokens" in caught.value.details()
                assert teacher.calls == 0, "refused before any work: the teacher was not called"
                # The same prompt student-only, with room for its answer, is served.
                alone = edge_pb2.GenerateRequest(prompt=words(230), mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=4)
                assert (await stub.Generate(alone)).student_text
    finally:
        await server.stop(0)


async def test_guidance_that_overflows_anyway_ends_the_answer_with_length_not_an_error() -> None:
    """A teacher that writes far more than K (here one 200-word delta) cannot make the edge fail the request."""
    teacher = ScriptedTeacher([words(200)], finish_reason=common_pb2.FINISH_REASON_LENGTH)
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, n_ctx_per_slot=CONTEXT) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                request = edge_pb2.GenerateRequest(prompt=words(100), guidance_tokens=10, max_tokens=8)
                response = await stub.Generate(request)
        assert response.finish_reason == common_pb2.FINISH_REASON_LENGTH
        assert response.guidance_text == words(200) and response.student_text == ""
        assert not response.degraded
    finally:
        await server.stop(0)
