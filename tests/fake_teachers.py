"""Misbehaving teachers for fault tests: real gRPC servers whose TeacherService hangs or streams slowly.

Fakes are fine here: these tests are about how the edge copes with a teacher's timing and failures, and the real
teacher is exercised by the integration tests of the same flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence

import grpc

from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc


class ScriptedTeacher(teacher_pb2_grpc.TeacherServiceServicer):
    """Streams `deltas` with `delay` seconds before each; `hang_after` deltas it stops answering for good."""

    def __init__(
        self,
        deltas: Sequence[str],
        delay: float = 0.0,
        hang_after: int | None = None,
        pause_after: int | None = None,
        pause_seconds: float = 0.0,
        finish_reason: int = common_pb2.FINISH_REASON_LENGTH,
        fail_calls: Collection[int] = (),
    ) -> None:
        self.deltas = list(deltas)
        self.delay = delay
        self.hang_after = hang_after
        self.pause_after = pause_after  # after this many deltas, stop for `pause_seconds`, then go on
        self.pause_seconds = pause_seconds
        self.paused = asyncio.Event()  # set when the pause starts
        self.finish_reason = finish_reason
        self.fail_calls = set(fail_calls)  # these calls (1 = the first) fail at once with INTERNAL
        self.calls = 0
        self.last_delta_sent_at = 0.0
        self.cancelled = 0

    async def StreamGuidance(  # noqa: N802
        self, request: teacher_pb2.GuidanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[teacher_pb2.GuidanceChunk]:
        self.calls += 1
        if self.calls in self.fail_calls:
            await context.abort(grpc.StatusCode.INTERNAL, "a scripted failure")
        loop = asyncio.get_running_loop()
        try:
            for index, delta in enumerate(self.deltas[: request.max_tokens]):
                if self.hang_after is not None and index >= self.hang_after:
                    await asyncio.Event().wait()  # never answers again
                if index == self.pause_after:
                    self.paused.set()
                    await asyncio.sleep(self.pause_seconds)
                await asyncio.sleep(self.delay)
                self.last_delta_sent_at = loop.time()
                usage = teacher_pb2.TeacherUsage(
                    prompt_tokens=5, completion_tokens=index + 1
                )  # as real teachers report
                yield teacher_pb2.GuidanceChunk(delta=teacher_pb2.GuidanceDelta(text=delta, usage=usage))
            count = min(len(self.deltas), request.max_tokens)
            yield teacher_pb2.GuidanceChunk(
                done=teacher_pb2.GuidanceDone(
                    usage=teacher_pb2.TeacherUsage(prompt_tokens=5, completion_tokens=count),
                    finish_reason=self.finish_reason,
                    timings=teacher_pb2.TeacherTimings(total_seconds=self.delay * count),
                )
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def start_fake_teacher(servicer: ScriptedTeacher) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    teacher_pb2_grpc.add_TeacherServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class VerifyingTeacher(ScriptedTeacher):
    """Also answers `Verify` by a script, one action per call: "accept" (the whole draft, then the correction " so"),
    "fail" (INTERNAL), "unimplemented" (a backend that cannot verify), "hang" (never answers); once the script is
    spent, "end" (the whole draft, and the answer ends there)."""

    def __init__(self, script: Sequence[str] = (), deltas: Sequence[str] = ()) -> None:
        super().__init__(deltas)
        self.script = list(script)
        self.verify_calls = 0
        self.verify_cancelled = 0
        self.hanging = asyncio.Event()  # set when a "hang" starts

    async def Verify(  # noqa: N802
        self, request: teacher_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.VerifyResponse:
        self.verify_calls += 1
        action = self.script.pop(0) if self.script else "end"
        if action == "fail":
            await context.abort(grpc.StatusCode.INTERNAL, "a scripted failure")
        if action == "unimplemented":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this backend cannot verify")
        if action == "hang":
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.verify_cancelled += 1
                raise
        ended = action == "end"
        return teacher_pb2.VerifyResponse(
            accepted_chars=len(request.draft_text),
            correction_text="" if ended else " so",
            ended=ended,
            finish_reason=common_pb2.FINISH_REASON_STOP if ended else common_pb2.FINISH_REASON_LENGTH,
            usage=teacher_pb2.VerifyUsage(prompt_tokens=20, scored_tokens=4, generated_tokens=1, passes=1),
        )
