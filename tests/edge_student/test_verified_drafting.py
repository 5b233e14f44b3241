"""Teacher-verified drafting (the `verify` policy) on real models over gRPC: with greedy decoding and a shared
tokenizer (Qwen2.5-Coder 1.5B teacher on llama.cpp, 0.5B student) a strict answer is the teacher-only answer for far
fewer teacher decode steps; across tokenizers (Gemma teacher, SmolLM2 student) it completes, and only checked text
is streamed, tagged by who wrote it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest_asyncio

from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import counter_total, running_edge, running_teacher

GREEDY = common_pb2.Sampling(temperature=0.0)
PROMPTS = [
    "Q: Tom has 3 apples and buys 5 more. He gives 2 to Ann. How many apples does Tom have?\nA: Let's think step by "
    "step.",
    "Q: A train travels 60 km in one hour. How far does it travel in 4 hours?\nA: Let's think step by step.",
]
MAX_TOKENS = 40
CHECKED = {edge_pb2.SEGMENT_GUIDANCE, edge_pb2.SEGMENT_VERIFIED, edge_pb2.SEGMENT_CORRECTION}


def verify_policy(**fields: object) -> edge_pb2.GuidancePolicy:
    return edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_VERIFY, **fields)  # type: ignore[arg-type]


async def streamed(
    stub: edge_pb2_grpc.EdgeServiceStub, request: edge_pb2.GenerateRequest
) -> tuple[list[edge_pb2.AnswerDelta], edge_pb2.GenerateResponse]:
    deltas: list[edge_pb2.AnswerDelta] = []
    async for chunk in stub.GenerateStream(request):
        if chunk.HasField("final"):
            return deltas, chunk.final
        deltas.append(chunk.delta)
    raise AssertionError("the stream ended without a final chunk")


@pytest_asyncio.fixture(scope="module")
async def qwen_edge() -> AsyncIterator[EdgeServer]:
    async with (
        running_teacher(model="qwen2.5-coder-1.5b") as teacher,
        running_edge(teacher.port, model="qwen2.5-coder-0.5b", n_slots=2) as edge,
    ):
        yield edge


async def test_strict_verify_gives_the_teacher_only_answer_for_few_teacher_decode_steps(qwen_edge: EdgeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{qwen_edge.port}") as channel:
        stub = edge_pb2_grpc.EdgeServiceStub(channel)
        same, teacher_steps, verify_steps = 0, 0, 0
        for prompt in PROMPTS:
            teacher = await stub.Generate(
                edge_pb2.GenerateRequest(
                    prompt=prompt, mode=edge_pb2.MODE_TEACHER_ONLY, max_tokens=MAX_TOKENS, sampling=GREEDY
                )
            )
            request = edge_pb2.GenerateRequest(
                prompt=prompt,
                mode=edge_pb2.MODE_GKT,
                guidance_tokens=0,
                max_tokens=MAX_TOKENS,
                sampling=GREEDY,
                guidance_policy=verify_policy(draft_tokens=8),
            )
            deltas, verified = await streamed(stub, request)
            assert not verified.degraded
            assert {d.segment for d in deltas} <= CHECKED - {edge_pb2.SEGMENT_GUIDANCE}
            assert "".join(d.text for d in deltas) == verified.text
            checks = verified.verification
            assert checks.rounds >= 2 and 0 < checks.accepted_tokens <= checks.draft_tokens
            assert checks.teacher_scored_tokens > 0 and checks.teacher_passes >= checks.rounds
            same += verified.text == teacher.text
            teacher_steps += teacher.usage.teacher_completion_tokens
            verify_steps += verified.usage.teacher_completion_tokens
            assert verified.usage.teacher_completion_tokens == checks.corrected_tokens
            assert verified.usage.completion_tokens <= MAX_TOKENS
    # Greedy with one tokenizer: the teacher's own answer (a near-tie scored in an 8-token pass can flip; see
    # PLATFORM.md), for a fraction of the teacher's decode steps.
    assert same >= len(PROMPTS) - 1 and same >= 1, f"{same} of {len(PROMPTS)} answers equal the teacher-only answer"
    assert verify_steps <= 0.6 * teacher_steps, (verify_steps, teacher_steps)
    registry = qwen_edge.metrics.registry
    assert counter_total(registry, "gkt_verification_rounds") >= 2 * len(PROMPTS)
    assert 0 < counter_total(registry, "gkt_draft_tokens_accepted") <= counter_total(registry, "gkt_draft_tokens")


async def test_verify_after_guidance_across_tokenizers_streams_only_checked_text(
    edge_stub: edge_pb2_grpc.EdgeServiceStub,
) -> None:
    """Gemma teacher, SmolLM2 student: the hand-off is by characters; K teacher tokens first, then checked drafts."""
    request = edge_pb2.GenerateRequest(
        prompt="Q: Name three colours of the rainbow.\nA:",
        mode=edge_pb2.MODE_GKT,
        guidance_tokens=4,
        max_tokens=32,
        sampling=GREEDY,
        guidance_policy=verify_policy(draft_tokens=6),
    )
    deltas, answer = await streamed(edge_stub, request)
    assert not answer.degraded and answer.text
    assert {d.segment for d in deltas} <= CHECKED
    assert deltas[0].segment == edge_pb2.SEGMENT_GUIDANCE
    assert "".join(d.text for d in deltas) == answer.text
    assert answer.verification.rounds >= 1
    assert answer.usage.completion_tokens <= 32


async def test_the_http_door_takes_any_guidance_policy_and_tags_checked_text(edge_server: EdgeServer) -> None:
    """`gkt.guidance_policy` over the OpenAI-compatible API: verify streams `verified` / `correction` segments and
    reports its rounds; adaptive is accepted too; a bad value is a 400 naming the field."""
    url = f"http://127.0.0.1:{edge_server.http_port}/v1/completions"
    body = {
        "model": "gkt",
        "prompt": "Q: Name three colours of the rainbow.\nA:",
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "gkt": {"guidance_tokens": 0, "guidance_policy": {"kind": "verify", "draft_tokens": 6, "acceptance": "strict"}},
    }
    segments, text, final = set(), "", None
    async with httpx.AsyncClient(timeout=120) as http:
        async with http.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                extension = chunk.get("gkt") or {}
                if "segment" in extension:
                    segments.add(extension["segment"])
                    text += chunk["choices"][0]["text"]
                elif "verification" in extension:
                    final = extension
        assert segments and segments <= {"verified", "correction"}
        assert final is not None and final["verification"]["rounds"] >= 1
        assert text == final["student_text"]
        adaptive = {**body, "stream": False, "gkt": {"guidance_tokens": 4, "guidance_policy": {"kind": "adaptive"}}}
        assert (await http.post(url, json=adaptive)).status_code == 200
        for policy, field in (
            ({"kind": "verify", "draft_tokens": 0}, "gkt.guidance_policy.draft_tokens"),
            ({"kind": "verify", "acceptance": "speculative"}, "gkt.guidance_policy.acceptance"),
            ({"kind": "sometimes"}, "gkt.guidance_policy.kind"),
        ):
            refused = await http.post(url, json={**body, "stream": False, "gkt": {"guidance_policy": policy}})
            assert refused.status_code == 400, refused.text
            assert field in refused.text, refused.text


async def test_bad_verify_parameters_over_grpc_name_the_field(edge_stub: edge_pb2_grpc.EdgeServiceStub) -> None:
    for policy, field in (
        (verify_policy(draft_tokens=65), "guidance_policy.draft_tokens"),
        (
            verify_policy(acceptance=edge_pb2.GuidancePolicy.ACCEPTANCE_MIN_TEACHER_PROB, min_teacher_prob=0.0),
            "guidance_policy.min_teacher_prob",
        ),
        (verify_policy(correction_tokens=0), "guidance_policy.correction_tokens"),
        (verify_policy(escalate=True), "guidance_policy.escalate"),
    ):
        request = edge_pb2.GenerateRequest(prompt="Hi", max_tokens=4, guidance_policy=policy)
        try:
            await edge_stub.Generate(request)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (error.details() or "")
        else:
            raise AssertionError(f"{field} was accepted")
