"""The circuit breaker under adaptive traffic: a guidance call the edge stops early because the student agreed is a
teacher success (a real edge and student; a scripted teacher that fails on the calls the test picks)."""

from __future__ import annotations

import asyncio

import grpc

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

WORDS = [f" word{i}" for i in range(60)]


def early_stopped_request() -> edge_pb2.GenerateRequest:
    """Adaptive, and a student that always agrees: the guidance is stopped after the floor of 3 tokens."""
    policy = edge_pb2.GuidancePolicy(
        kind=edge_pb2.GuidancePolicy.KIND_ADAPTIVE,
        floor_tokens=3,
        window=1,
        min_top1_fraction=0.0,
        min_mean_logprob=-1.0e9,
    )
    return edge_pb2.GenerateRequest(
        prompt="Q: Name some words.\nA:",
        guidance_tokens=30,
        max_tokens=40,  # the whole answer: room for the floor of guidance and the student's words after it
        guidance_policy=policy,
        sampling=common_pb2.Sampling(temperature=0.0),
    )


async def test_failures_between_early_stopped_calls_are_not_consecutive() -> None:
    teacher = ScriptedTeacher(WORDS, delay=0.02, fail_calls={1, 7, 13})
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, breaker_failure_threshold=3, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                answers = [await stub.Generate(early_stopped_request()) for _ in range(15)]
                assert teacher.calls == 15
                assert edge.breaker.state == "closed"
    finally:
        await server.stop(grace=0)
    failed = [i + 1 for i, answer in enumerate(answers) if answer.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR]
    assert failed == [1, 7, 13]
    stopped = [a for i, a in enumerate(answers) if i + 1 not in failed]
    assert all(a.guidance_end == edge_pb2.GUIDANCE_END_STUDENT_AGREED and not a.degraded for a in stopped)


async def test_an_early_stopped_trial_closes_a_half_open_breaker() -> None:
    teacher = ScriptedTeacher(WORDS, delay=0.02, fail_calls={1})
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, breaker_failure_threshold=1, breaker_reset_seconds=1.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                failed = await stub.Generate(early_stopped_request())
                assert failed.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR
                assert edge.breaker.state == "open"
                await asyncio.sleep(1.1)
                trial = await stub.Generate(early_stopped_request())
                assert not trial.degraded and trial.guidance_end == edge_pb2.GUIDANCE_END_STUDENT_AGREED
                assert edge.breaker.state == "closed"
                after = [await stub.Generate(early_stopped_request()) for _ in range(3)]  # within reset_seconds
    finally:
        await server.stop(grace=0)
    assert [a.degraded for a in after] == [False, False, False]
