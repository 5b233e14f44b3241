"""A request that cannot fit the student's context is refused before any work; guidance longer than asked is cut at
max_tokens and ends the answer with finish_reason=length (real student, scripted teacher: the guidance's size is the
subject)."""

from __future__ import annotations

import grpc
import pytest

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

CONTEXT = 256


def words(n: int) -> str:
    return "word " * n  # about one SmolLM2 token a word


async def test_prompt_that_fits_alone_but_not_with_max_tokens_is_refused_up_front() -> None:
    """`max_tokens` is the whole answer (guidance included): the prompt and it must fit, with a small margin for
    re-tokenising at the hand-off."""
    teacher = ScriptedTeacher([" and"] * 40)
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, n_ctx_per_slot=CONTEXT) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                request = edge_pb2.GenerateRequest(prompt=words(230), guidance_tokens=40, max_tokens=40)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Generate(request)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith("max_tokens:")
                assert "it includes any guidance" in caught.value.details()
                assert teacher.calls == 0, "refused before any work: the teacher was not called"
                # The same prompt with a whole answer that fits is served, guided or not (K is clipped to it).
                for mode in (edge_pb2.MODE_GKT, edge_pb2.MODE_STUDENT_ONLY):
                    fits = edge_pb2.GenerateRequest(prompt=words(230), mode=mode, guidance_tokens=40, max_tokens=4)
                    assert (await stub.Generate(fits)).text
    finally:
        await server.stop(0)


async def test_guidance_far_longer_than_asked_is_cut_at_max_tokens_not_an_error() -> None:
    """A teacher that writes far more than K (here one 200-word delta) cannot make the edge fail the request, nor
    pass `max_tokens`: the guidance is cut there and the answer ends with finish_reason=length."""
    teacher = ScriptedTeacher([words(200)], finish_reason=common_pb2.FINISH_REASON_LENGTH)
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, n_ctx_per_slot=CONTEXT) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                request = edge_pb2.GenerateRequest(prompt=words(100), guidance_tokens=10, max_tokens=8)
                response = await stub.Generate(request)
        assert response.finish_reason == common_pb2.FINISH_REASON_LENGTH
        assert response.guidance_text and words(200).startswith(response.guidance_text)
        assert response.student_text == "" and response.usage.completion_tokens == 8
        assert not response.degraded
    finally:
        await server.stop(0)
