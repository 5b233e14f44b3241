"""Teacher-verified drafting when the teacher fails (a scripted fake teacher, real student and gRPC): the student
finishes unverified and the answer is degraded; the breaker counts the teacher's failures and its completed
verifications, but not a backend that cannot verify; a deadline or a cancelled call aborts the verification."""

from __future__ import annotations

import asyncio
import time

import grpc

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge, wait_until
from tests.fake_teachers import VerifyingTeacher, start_fake_teacher

VERIFIED = {edge_pb2.SEGMENT_VERIFIED, edge_pb2.SEGMENT_CORRECTION}


def request(max_tokens: int = 24) -> edge_pb2.GenerateRequest:
    return edge_pb2.GenerateRequest(
        prompt="Q: What do bees make?\nA:",
        mode=edge_pb2.MODE_GKT,
        guidance_tokens=0,
        max_tokens=max_tokens,
        sampling=common_pb2.Sampling(temperature=0.0),
        guidance_policy=edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_VERIFY, draft_tokens=4),
    )


async def streamed(
    stub: edge_pb2_grpc.EdgeServiceStub, message: edge_pb2.GenerateRequest
) -> tuple[list[edge_pb2.AnswerDelta], edge_pb2.GenerateResponse]:
    deltas = []
    async for chunk in stub.GenerateStream(message):
        if chunk.HasField("final"):
            return deltas, chunk.final
        deltas.append(chunk.delta)
    raise AssertionError("no final chunk")


async def test_a_teacher_failing_mid_answer_leaves_it_to_the_student_and_counts_for_the_breaker() -> None:
    teacher = VerifyingTeacher(["accept", "fail", "fail", "accept", "fail", "fail"])
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, breaker_failure_threshold=2, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                deltas, answer = await streamed(stub, request())
                # One verified round, then the failure: the student writes the rest, unverified and said so.
                assert answer.degraded and answer.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR
                segments = [d.segment for d in deltas]
                assert segments[0] in VERIFIED and segments[-1] == edge_pb2.SEGMENT_STUDENT
                assert "".join(d.text for d in deltas) == answer.text
                assert answer.verification.rounds == 1 and answer.usage.completion_tokens <= 24
                assert edge.breaker.state == "closed"  # one failure in a row
                await stub.Generate(request())  # fails at once: two in a row
                assert edge.breaker.state == "open"
                refused = await stub.Generate(request())
                assert refused.degraded_reason == edge_pb2.DEGRADED_REASON_CIRCUIT_OPEN
                assert teacher.verify_calls == 3
    finally:
        await server.stop(0)


async def test_a_completed_verification_is_a_success_for_the_breaker() -> None:
    teacher = VerifyingTeacher(["fail", "accept", "end", "fail"])
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, breaker_failure_threshold=2, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                assert (await stub.Generate(request())).degraded
                healthy = await stub.Generate(request())
                assert not healthy.degraded and healthy.verification.rounds == 2
                assert " so" in healthy.text  # the scripted correction
                assert (await stub.Generate(request())).degraded
                assert edge.breaker.state == "closed", "the success between the failures reset the count"
    finally:
        await server.stop(0)


async def test_a_teacher_that_cannot_verify_is_not_at_fault() -> None:
    teacher = VerifyingTeacher(["unimplemented"] * 3)
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, breaker_failure_threshold=1, breaker_reset_seconds=60.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                deltas, answer = await streamed(stub, request())
                assert answer.degraded and answer.degraded_reason == edge_pb2.DEGRADED_REASON_ERROR
                assert answer.text and {d.segment for d in deltas} == {edge_pb2.SEGMENT_STUDENT}
                assert edge.breaker.state == "closed"
    finally:
        await server.stop(0)


async def test_deadlines_and_cancellation_abort_the_verification() -> None:
    teacher = VerifyingTeacher(["hang", "hang"])
    server, port = await start_fake_teacher(teacher)
    try:
        async with running_edge(port, guidance_timeout_seconds=1.0) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)
                started = time.monotonic()
                answer = await stub.Generate(request())
                assert answer.degraded and answer.degraded_reason == edge_pb2.DEGRADED_REASON_DEADLINE
                assert answer.text and time.monotonic() - started < 10
                await wait_until(lambda: teacher.verify_cancelled == 1)
                # The app cancels while the teacher checks a draft: the teacher's call is cancelled too.
                teacher.hanging.clear()
                call = stub.Generate(request())
                await asyncio.wait_for(teacher.hanging.wait(), 10)
                call.cancel()
                await wait_until(lambda: teacher.verify_cancelled == 2)
    finally:
        await server.stop(0)
