"""Verify on the default teacher's real vLLM engine (CPU): scores read on the prefix cache equal an uncached pass,
the prefix is not recomputed, repeats are exact, and strict acceptance keeps the teacher's own continuation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from cloud_teacher.backends.vllm_verify import draft_tokens
from cloud_teacher.server import TeacherServer
from shared.protocol.domain import PromptInput
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from tests.conftest import counter_total, running, teacher_settings

GREEDY = common_pb2.Sampling(temperature=0.0)
# ~350 teacher tokens: several 32-token cache blocks before the draft.
PREFIX = "".join(
    f"Q: What is {i} plus {i + 1}?\nA: {i} plus {i + 1} is {2 * i + 1}. The answer is {2 * i + 1}.\n" for i in range(12)
)
PROMPT = PREFIX + "Q: What is 20 plus 21?\nA:"


@pytest_asyncio.fixture(scope="module")
async def vllm_teacher() -> AsyncIterator[TeacherServer]:
    """The default teacher on vLLM with the default block size (32), started once for this module."""
    settings = teacher_settings(backend="vllm", model=None, max_num_seqs=4, kv_cache_space_gib=1, max_model_len=2048)
    assert settings.block_size == 32
    async with running(TeacherServer(settings)) as server:
        yield server


@pytest_asyncio.fixture
async def stub(vllm_teacher: TeacherServer) -> AsyncIterator[teacher_pb2_grpc.TeacherServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{vllm_teacher.port}") as channel:
        yield teacher_pb2_grpc.TeacherServiceStub(channel)


def verify_request(draft: str, accepted: str = "", **fields: object) -> teacher_pb2.VerifyRequest:
    values: dict[str, object] = {"prompt": PROMPT, "accepted_text": accepted, "draft_text": draft, "sampling": GREEDY}
    values.update(fields)
    return teacher_pb2.VerifyRequest(**values)  # type: ignore[arg-type]


async def guidance(stub: teacher_pb2_grpc.TeacherServiceStub, k: int) -> str:
    text = ""
    request = teacher_pb2.GuidanceRequest(prompt=PROMPT, max_tokens=k, sampling=GREEDY)
    async for chunk in stub.StreamGuidance(request):
        text += chunk.delta.text
    return text


async def uncached_scores(server: TeacherServer, accepted: str, draft: str) -> list[tuple[float, bool]]:
    """(log-probability, top-1) of each draft token from one pass that reads nothing from the prefix cache."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    backend = server.backend
    rendered = backend._format.render(PromptInput(prompt=PROMPT + accepted + draft))  # type: ignore[attr-defined]
    tokens = draft_tokens(backend._tokenizer, rendered.pieces, draft)  # type: ignore[attr-defined]
    params = SamplingParams(
        max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False, skip_reading_prefix_cache=True
    )
    final = None
    async for output in backend._engine.generate(  # type: ignore[attr-defined]
        TokensPrompt(prompt_token_ids=tokens.prompt_ids), params, f"uncached-{time.time_ns()}"
    ):
        final = output
    assert final is not None and final.num_cached_tokens == 0
    scores = []
    for index in range(tokens.first, len(tokens.prompt_ids)):
        entry = final.prompt_logprobs[index]
        token = tokens.prompt_ids[index]
        scores.append((entry[token].logprob, entry[token].rank == 1))
    return scores


def assert_same_scores(response: teacher_pb2.VerifyResponse, expected: list[tuple[float, bool]]) -> None:
    assert [t.top1 for t in response.tokens] == [top1 for _, top1 in expected]
    for token, (logprob, _) in zip(response.tokens, expected, strict=True):
        assert token.logprob == pytest.approx(logprob, abs=0.02), (token, logprob)


async def test_strict_acceptance_keeps_the_teachers_own_greedy_continuation(
    vllm_teacher: TeacherServer, stub: teacher_pb2_grpc.TeacherServiceStub
) -> None:
    own = await guidance(stub, 9)
    accepted, draft = own[:2], own[2:]  # cut inside a teacher token: it counts as draft
    before = counter_total(vllm_teacher.metrics.registry, "gkt_verification_requests")
    response = await stub.Verify(verify_request(draft, accepted))
    longer = await guidance(stub, 12)
    assert response.accepted_chars == len(draft), response
    assert all(t.top1 and t.accepted for t in response.tokens)
    assert response.correction_text and longer.startswith(own + response.correction_text)
    assert response.usage.generated_tokens == 1 and not response.ended
    # The guidance request cached the prompt: the verification read it.
    assert response.usage.cached_prompt_tokens > 0 and response.usage.passes == 1
    assert counter_total(vllm_teacher.metrics.registry, "gkt_verification_requests") == before + 1


async def test_scores_read_on_the_prefix_cache_equal_an_uncached_pass(
    vllm_teacher: TeacherServer, stub: teacher_pb2_grpc.TeacherServiceStub
) -> None:
    accepted, first_draft, second_draft = " 20 plus 21", " is 41. The answer is 41.", " equals forty one, I think."
    first = await stub.Verify(verify_request(first_draft, accepted))
    # The same prefix, another draft: the prefix is read from the cache, not recomputed, and scores are still exact.
    second = await stub.Verify(verify_request(second_draft, accepted))
    assert second.usage.cached_prompt_tokens > 0 and second.usage.passes == 1
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens - len(first.tokens) - 32 - 1
    assert_same_scores(first, await uncached_scores(vllm_teacher, accepted, first_draft))
    assert_same_scores(second, await uncached_scores(vllm_teacher, accepted, second_draft))
    assert second.accepted_chars < len(second_draft) and second.correction_text


async def test_the_identical_verification_twice_gives_identical_results(
    stub: teacher_pb2_grpc.TeacherServiceStub,
) -> None:
    request = verify_request(" 20 plus 21 is 41, so", correction_tokens=3)
    first = await stub.Verify(request)
    again = await stub.Verify(request)
    # The whole prompt is cached now, the position before the draft too: that pass is scored again uncached.
    assert again.usage.passes >= 2
    for field in ("accepted_chars", "correction_text", "ended", "tokens"):
        assert getattr(again, field) == getattr(first, field), field


async def test_speculative_acceptance_is_deterministic_under_a_seed(stub: teacher_pb2_grpc.TeacherServiceStub) -> None:
    draft = " 20 plus 21 is 41."
    pieces = [teacher_pb2.DraftPiece(start=i, end=i + 1, probability=0.9) for i in range(len(draft))]
    request = verify_request(
        draft,
        acceptance=teacher_pb2.Acceptance(rule=teacher_pb2.Acceptance.RULE_SPECULATIVE, draft_pieces=pieces),
        sampling=common_pb2.Sampling(temperature=0.8, seed=11),
    )
    first = await stub.Verify(request)
    again = await stub.Verify(request)
    assert (first.accepted_chars, first.correction_text) == (again.accepted_chars, again.correction_text)
    assert first.usage.scored_tokens == len(first.tokens) > 0
