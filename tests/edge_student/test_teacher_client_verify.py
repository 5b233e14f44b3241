"""The edge's `TeacherClient.verify` against a real teacher (the tiny llama.cpp pair's, over gRPC): the verdict, and
failures mapped as guidance maps them (deadline, unreachable, refused input)."""

from __future__ import annotations

import pytest

from cloud_teacher.server import TeacherServer
from edge_student.teacher_client import GuidanceDeadlines, TeacherClient, TeacherUnavailableError
from shared.protocol.domain import PromptInput, Sampling
from shared.protocol.verification import VerifyParams
from tests.conftest import closed_port

DEADLINES = GuidanceDeadlines(first_token_seconds=30.0, total_seconds=60.0, teacher_only_seconds=120.0)
GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=None)


def params(draft: str) -> VerifyParams:
    return VerifyParams(PromptInput(prompt="Q: What do bees make?\nA:"), "", draft, GREEDY)


async def test_verify_returns_the_teachers_verdict(teacher_server: TeacherServer) -> None:
    client = TeacherClient(f"127.0.0.1:{teacher_server.port}", DEADLINES)
    try:
        result = await client.verify(params(" Honey purple"), "gkt")
    finally:
        await client.close()
    assert 0 <= result.accepted_chars <= len(" Honey purple")
    assert result.tokens and result.tokens[-1].end == len(" Honey purple")
    assert result.usage.scored_tokens == len(result.tokens) and result.usage.passes >= 1
    assert result.correction_text or result.ended
    assert result.timings.total_seconds > 0


async def test_verify_failures_are_mapped_as_for_guidance(teacher_server: TeacherServer) -> None:
    client = TeacherClient(f"127.0.0.1:{teacher_server.port}", DEADLINES)
    try:
        with pytest.raises(TeacherUnavailableError) as caught:
            await client.verify(params(" Honey"), "gkt", time_left=0.0005)  # the caller's own deadline
        assert caught.value.reason == "deadline" and not caught.value.teacher_at_fault
        with pytest.raises(TeacherUnavailableError) as caught:
            await client.verify(params(""), "gkt")  # an empty draft: the request's fault, not the teacher's
        assert caught.value.reason == "error" and not caught.value.teacher_at_fault
        assert "draft_text" in str(caught.value)
    finally:
        await client.close()
    nobody = TeacherClient(f"127.0.0.1:{closed_port()}", DEADLINES)
    try:
        with pytest.raises(TeacherUnavailableError) as caught:
            await nobody.verify(params(" Honey"), "gkt")
        assert caught.value.reason == "unavailable" and caught.value.teacher_at_fault
    finally:
        await nobody.close()
