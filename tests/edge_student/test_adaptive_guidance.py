"""Adaptive guidance and escalation on the real models (llama.cpp teacher, SmolLM2 student), over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_teacher.server import TeacherServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import counter_total, running_edge, wait_until

QUESTION = "Explain in detail how plants turn sunlight into food."
NEVER = 1.0  # a mean log-probability above 0 cannot be reached: the student never agrees
ALWAYS = -1.0e9  # any scores agree


def request(k: int, policy: edge_pb2.GuidancePolicy | None = None, max_tokens: int = 24) -> edge_pb2.GenerateRequest:
    message = common_pb2.ChatMessage(role="user", content=QUESTION)
    return edge_pb2.GenerateRequest(
        conversation=common_pb2.Conversation(messages=[message]),
        guidance_tokens=k,
        max_tokens=max_tokens,
        sampling=common_pb2.Sampling(temperature=0.0, seed=7),
        guidance_policy=policy,
    )


def adaptive(**fields: object) -> edge_pb2.GuidancePolicy:
    return edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_ADAPTIVE, **fields)  # type: ignore[arg-type]


def teacher_tokens(teacher: TeacherServer) -> float:
    return counter_total(teacher.metrics.registry, "gkt_generation_tokens")


async def test_adaptive_that_never_agrees_gives_exactly_the_fixed_answer(teacher_server: TeacherServer) -> None:
    async with running_edge(teacher_server.port) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            fixed = await stub.Generate(request(16))
            never = await stub.Generate(request(16, adaptive(floor_tokens=4, window=2, min_mean_logprob=NEVER)))
    assert never.text == fixed.text and never.guidance_text == fixed.guidance_text
    assert never.guidance_end == fixed.guidance_end == edge_pb2.GUIDANCE_END_K_REACHED
    assert never.usage.teacher_completion_tokens == fixed.usage.teacher_completion_tokens == 16


async def test_stopping_early_aborts_the_teachers_generation(teacher_server: TeacherServer) -> None:
    """A student that always agrees stops the guidance at the floor: the teacher's request is aborted (its token
    counter stops rising, its slot is freed, far fewer than K tokens written), and the student's answer starts with
    exactly the guidance it read. (Exactly the floor, on the slow default teacher: test_vllm_backend.py.)"""
    floor, k = 5, 120
    policy = adaptive(floor_tokens=floor, window=2, min_top1_fraction=0.0, min_mean_logprob=ALWAYS)
    async with running_edge(teacher_server.port) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            before = teacher_tokens(teacher_server)
            response = await edge_pb2_grpc.EdgeServiceStub(channel).Generate(request(k, policy, max_tokens=k))
    assert response.guidance_end == edge_pb2.GUIDANCE_END_STUDENT_AGREED
    read = response.usage.teacher_completion_tokens
    # This teacher writes a token every ~25 ms, faster than the student scores them: it runs a little past the floor.
    assert floor <= read < k // 4
    await wait_until(lambda: teacher_server.backend.occupancy() == (0, 0))
    settled = teacher_tokens(teacher_server)
    await asyncio.sleep(1.0)
    assert teacher_tokens(teacher_server) == settled, "the teacher kept generating for a stopped request"
    written = settled - before  # the teacher's own count: what the edge read, and any tokens still in flight
    assert read <= written < read + 8
    assert response.text.startswith(response.guidance_text) and response.student_text
    assert counter_total(edge.metrics.registry, "gkt_guidance_stopped_early") == 1
    saved = counter_total(edge.metrics.registry, "gkt_guidance_tokens_saved")
    assert saved == k - read


async def test_an_unsure_student_asks_for_a_burst_in_the_middle_of_its_answer(teacher_server: TeacherServer) -> None:
    """Entropy above 0 nats is always "unsure": after two such tokens the student pauses, the teacher writes a burst
    continuing the answer so far, and the student goes on after it: guidance, student, burst, student."""
    policy = edge_pb2.GuidancePolicy(
        kind=edge_pb2.GuidancePolicy.KIND_FIXED,
        escalate=True,
        entropy_threshold=0.0,
        entropy_run=2,
        max_bursts=1,
        burst_tokens=4,
    )
    async with running_edge(teacher_server.port) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            segments: list[tuple[int, str]] = []
            final = None
            async for chunk in stub.GenerateStream(request(6, policy, max_tokens=20)):
                if chunk.HasField("delta"):
                    if segments and segments[-1][0] == chunk.delta.segment:
                        segments[-1] = (chunk.delta.segment, segments[-1][1] + chunk.delta.text)
                    else:
                        segments.append((chunk.delta.segment, chunk.delta.text))
                else:
                    final = chunk.final
    assert final is not None and len(final.bursts) == 1
    g, s = edge_pb2.SEGMENT_GUIDANCE, edge_pb2.SEGMENT_STUDENT
    assert [kind for kind, _ in segments] == [g, s, g, s], segments
    burst = final.bursts[0]
    assert segments[2][1] == burst.text and 0 < burst.teacher_tokens <= 4
    assert final.text == "".join(text for _, text in segments)
    assert final.text[burst.offset : burst.offset + len(burst.text)] == burst.text
    assert final.guidance_text == segments[0][1] and burst.offset > len(final.guidance_text)
    assert final.usage.teacher_completion_tokens == 6 + burst.teacher_tokens


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("floor_tokens", 0),
        ("window", 0),
        ("min_top1_fraction", 1.5),
        ("burst_tokens", 0),
        ("burst_tokens", 100_000),  # a huge burst used to be blamed on max_tokens (the context check)
        ("max_bursts", 1_000_000),
    ],
)
async def test_bad_policies_name_their_field(
    edge_stub: edge_pb2_grpc.EdgeServiceStub, field: str, value: float
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stub.Generate(request(4, adaptive(**{field: value})))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"guidance_policy.{field}:")
