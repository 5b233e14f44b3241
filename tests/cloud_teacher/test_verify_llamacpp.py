"""Verify on a real llama.cpp teacher (Qwen2.5-Coder-1.5B GGUF) over real gRPC: the verdict, corrections, bad
input, and the teacher's verification metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from cloud_teacher.server import TeacherServer
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from tests.conftest import counter_total, running_teacher

PROMPT = "Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA:"
GREEDY = common_pb2.Sampling(temperature=0.0)


@pytest_asyncio.fixture(scope="module")
async def qwen_teacher() -> AsyncIterator[TeacherServer]:
    async with running_teacher(model="qwen2.5-coder-1.5b", n_ctx_per_slot=512, n_slots=2) as server:
        yield server


async def guidance(stub: teacher_pb2_grpc.TeacherServiceStub, prompt: str, k: int) -> str:
    text = ""
    async for chunk in stub.StreamGuidance(teacher_pb2.GuidanceRequest(prompt=prompt, max_tokens=k, sampling=GREEDY)):
        text += chunk.delta.text
    return text


def verify_request(draft: str, accepted: str = "", **fields: object) -> teacher_pb2.VerifyRequest:
    values: dict[str, object] = {"prompt": PROMPT, "accepted_text": accepted, "draft_text": draft, "sampling": GREEDY}
    values.update(fields)
    return teacher_pb2.VerifyRequest(**values)  # type: ignore[arg-type]


async def test_the_teachers_own_greedy_continuation_is_accepted_whole(qwen_teacher: TeacherServer) -> None:
    registry = qwen_teacher.metrics.registry
    before = {
        name: counter_total(registry, name)
        for name in (
            "gkt_verification_requests",
            "gkt_verification_scored_tokens",
            "gkt_verification_accepted_tokens",
            "gkt_verification_correction_tokens",
        )
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        own = await guidance(stub, PROMPT, 9)
        accepted, draft = own[:3], own[3:]  # the hand-off may cut inside a teacher token: it then counts as draft
        response = await stub.Verify(verify_request(draft, accepted))
        longer = await guidance(stub, PROMPT, 12)
    assert response.accepted_chars == len(draft), response
    assert all(t.top1 and t.accepted for t in response.tokens)
    assert response.tokens[0].start == 0 and response.tokens[-1].end == len(draft)
    # The bonus token is the teacher's next one: the answer goes on as teacher-only would.
    assert response.correction_text and longer.startswith(own + response.correction_text)
    assert not response.ended and response.finish_reason == common_pb2.FINISH_REASON_LENGTH
    usage = response.usage
    assert usage.scored_tokens == len(response.tokens) and usage.generated_tokens == 1 and usage.passes == 1
    assert usage.prompt_tokens > 0 and response.timings.total_seconds >= response.timings.queue_seconds
    after = {name: counter_total(registry, name) for name in before}
    assert after["gkt_verification_requests"] - before["gkt_verification_requests"] == 1
    assert after["gkt_verification_scored_tokens"] - before["gkt_verification_scored_tokens"] == usage.scored_tokens
    assert after["gkt_verification_accepted_tokens"] - before["gkt_verification_accepted_tokens"] == usage.scored_tokens
    assert after["gkt_verification_correction_tokens"] - before["gkt_verification_correction_tokens"] == 1
    assert counter_total(registry, "gkt_verification_latency_seconds") >= 0  # exported


async def test_a_wrong_draft_is_cut_where_the_teacher_disagrees_and_corrected(qwen_teacher: TeacherServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        own = await guidance(stub, PROMPT, 6)
        wrong = own + " purple elephants dance"
        response = await stub.Verify(verify_request(wrong))
        burst = await stub.Verify(verify_request(wrong, correction_tokens=4))
        longer = await guidance(stub, PROMPT, 12)
    assert response.accepted_chars == len(own), response
    assert [t.accepted for t in response.tokens].count(True) == sum(t.end <= len(own) for t in response.tokens)
    assert not response.tokens[-1].accepted
    # The correction is the teacher's own next token; a burst of 4 continues the teacher's answer.
    assert longer.startswith(own + response.correction_text), (own, response.correction_text, longer)
    assert burst.accepted_chars == len(own) and longer.startswith(own + burst.correction_text)
    assert burst.usage.generated_tokens == 4 and burst.usage.passes == 2
    assert len(burst.correction_text) > len(response.correction_text)


async def test_lenient_acceptance_keeps_what_strict_rejects(qwen_teacher: TeacherServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        strict = await stub.Verify(verify_request(" Tom has 7 apples in total."))
        lenient = await stub.Verify(
            verify_request(
                " Tom has 7 apples in total.",
                acceptance=teacher_pb2.Acceptance(
                    rule=teacher_pb2.Acceptance.RULE_MIN_TEACHER_PROB, min_teacher_prob=1e-6
                ),
            )
        )
    assert lenient.accepted_chars >= strict.accepted_chars
    assert lenient.accepted_chars == len(" Tom has 7 apples in total.")
    assert all(t.logprob <= 0 for t in strict.tokens)


async def test_a_stop_sequence_in_the_draft_ends_the_answer(qwen_teacher: TeacherServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        own = await guidance(stub, PROMPT, 8)
        stop = own.split()[2]  # a word inside the teacher's own continuation
        response = await stub.Verify(verify_request(own, sampling=common_pb2.Sampling(temperature=0.0, stop=[stop])))
    assert response.ended and response.finish_reason == common_pb2.FINISH_REASON_STOP
    assert response.accepted_chars == own.index(stop) and response.correction_text == ""


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"draft_text": ""}, "draft_text"),
        ({"draft_text": " 7", "correction_tokens": 65}, "correction_tokens"),
        (
            {"draft_text": " 7", "acceptance": teacher_pb2.Acceptance(rule=2, min_teacher_prob=2.0)},
            "acceptance.min_teacher_prob",
        ),
        ({"draft_text": " seven" * 300}, "draft_text"),  # more teacher tokens than a draft may have (256)
        # Fewer, but the prompt and the draft outgrow a request's context (512 tokens here).
        ({"prompt": PROMPT * 24, "draft_text": " seven" * 100}, "draft_text"),
    ],
)
async def test_bad_verifications_are_invalid_argument_naming_the_field(
    qwen_teacher: TeacherServer, request_fields: dict[str, object], field: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Verify(teacher_pb2.VerifyRequest(**{"prompt": PROMPT, **request_fields}))  # type: ignore[arg-type]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(field), caught.value.details()
        # The teacher keeps serving.
        ok = await stub.Verify(verify_request(" 7"))
    assert ok.usage.scored_tokens >= 1


async def test_a_chat_answer_is_verified_as_an_assistant_prefill(qwen_teacher: TeacherServer) -> None:
    conversation = common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="Name a red fruit.")])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_teacher.port}") as channel:
        stub = teacher_pb2_grpc.TeacherServiceStub(channel)
        request = teacher_pb2.GuidanceRequest(conversation=conversation, max_tokens=6, sampling=GREEDY)
        own = "".join([chunk.delta.text async for chunk in stub.StreamGuidance(request)])
        response = await stub.Verify(
            teacher_pb2.VerifyRequest(
                conversation=conversation, accepted_text=own[:4], draft_text=own[4:], sampling=GREEDY
            )
        )
    assert response.accepted_chars == len(own) - 4, (own, response)
    assert all(t.top1 for t in response.tokens)
