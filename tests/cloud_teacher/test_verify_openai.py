"""Verify through the `openai` teacher backend against real llama-cpp-python servers (Gemma): scored with echo +
logprobs where the server returns them, UNIMPLEMENTED where it cannot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio

from cloud_teacher.server import TeacherServer
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from tests.conftest import running, teacher_settings
from tests.llama_server import llama_server

PROMPT = "Q: What do bees make?\nA:"
GREEDY = common_pb2.Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def server_urls() -> Iterator[dict[bool, str]]:
    """Two `python -m llama_cpp.server`s on the teacher GGUF: one returning prompt log-probs (its default,
    `logits_all`), one not; yields their /v1 base URLs by whether they can score."""
    with (
        llama_server("--n_ctx", "1024", "--logits_all", "True") as scoring,
        llama_server("--n_ctx", "1024", "--logits_all", "False") as plain,
    ):
        yield {True: scoring, False: plain}


@pytest_asyncio.fixture
async def stubs(server_urls: dict[bool, str]) -> AsyncIterator[dict[bool, teacher_pb2_grpc.TeacherServiceStub]]:
    """A teacher on the openai backend in front of each server."""
    async with (
        running(TeacherServer(teacher_settings(backend="openai", openai_base_url=server_urls[True]))) as scoring,
        running(TeacherServer(teacher_settings(backend="openai", openai_base_url=server_urls[False]))) as plain,
        grpc.aio.insecure_channel(f"127.0.0.1:{scoring.port}") as scoring_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{plain.port}") as plain_channel,
    ):
        yield {
            True: teacher_pb2_grpc.TeacherServiceStub(scoring_channel),
            False: teacher_pb2_grpc.TeacherServiceStub(plain_channel),
        }


async def guidance(stub: teacher_pb2_grpc.TeacherServiceStub, k: int) -> str:
    request = teacher_pb2.GuidanceRequest(prompt=PROMPT, max_tokens=k, sampling=GREEDY)
    return "".join([chunk.delta.text async for chunk in stub.StreamGuidance(request)])


async def test_a_server_that_echoes_log_probs_scores_the_draft(
    stubs: dict[bool, teacher_pb2_grpc.TeacherServiceStub],
) -> None:
    stub = stubs[True]
    own = await guidance(stub, 6)
    response = await stub.Verify(teacher_pb2.VerifyRequest(prompt=PROMPT, draft_text=own, sampling=GREEDY))
    assert response.accepted_chars == len(own), response
    assert all(t.top1 and t.accepted for t in response.tokens) and response.tokens[-1].end == len(own)
    assert response.usage.scored_tokens == len(response.tokens) > 0 and response.usage.passes == 1
    wrong = await stub.Verify(
        teacher_pb2.VerifyRequest(prompt=PROMPT, draft_text=own + " purple elephants dance", sampling=GREEDY)
    )
    assert len(own) <= wrong.accepted_chars < len(own + " purple elephants dance")
    assert wrong.correction_text or wrong.ended


async def test_a_server_without_prompt_log_probs_answers_unimplemented(
    stubs: dict[bool, teacher_pb2_grpc.TeacherServiceStub],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[False].Verify(teacher_pb2.VerifyRequest(prompt=PROMPT, draft_text=" Honey.", sampling=GREEDY))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, caught.value.details()
    assert "cannot score" in (caught.value.details() or "")
    # Guidance still works on that server.
    assert await guidance(stubs[False], 3)
