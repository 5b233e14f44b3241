"""The edge's request flow: guidance streams in from the teacher while the student prefills, then the student writes.

Requests wait in the engine's bounded queue for one of its slots. In GKT mode the student's prompt enters the
engine *open*: the engine prefills it while the teacher is still streaming, and each guidance delta is appended
as it arrives, so cloud latency and edge prefill overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from edge_student.circuit_breaker import CircuitBreaker
from edge_student.teacher_client import TeacherClient, TeacherUnavailableError
from shared.llama.engine import (
    BatchedLlamaEngine,
    EngineSequence,
    SamplingParams,
    SequenceResult,
)
from shared.prompt_formats import PromptFormat, RenderedPrompt
from shared.protocol.domain import (
    Answer,
    AnswerDelta,
    AnswerEvent,
    FinishReason,
    GenerateParams,
    GuidanceDelta,
    GuidanceDone,
    GuidanceParams,
    Timings,
    Usage,
)
from shared.server.errors import BackendError

logger = logging.getLogger(__name__)


@dataclass
class _GuidanceOutcome:
    """What the teacher delivered for one request."""

    text: str = ""
    done: GuidanceDone | None = None
    failure: TeacherUnavailableError | None = None
    finished_at: float = 0.0


class _GuidanceJoiner:
    """Appends guidance to the student's prompt; a chat turn starts without the teacher's leading white space."""

    def __init__(self, rendered: RenderedPrompt) -> None:
        self._strip = rendered.strip_guidance_start

    def for_student(self, delta: str) -> str:
        if not self._strip:
            return delta
        stripped = delta.lstrip()
        if stripped:
            self._strip = False
        return stripped


class AnswerFlow:
    """Answers one request at a time per call; many calls run concurrently and share the student engine."""

    def __init__(
        self, engine: BatchedLlamaEngine, teacher: TeacherClient, student_format: PromptFormat, breaker: CircuitBreaker
    ) -> None:
        self.engine = engine
        self.teacher = teacher
        self.student_format = student_format
        self.breaker = breaker

    async def answer(self, params: GenerateParams, time_left: float | None = None) -> AsyncGenerator[AnswerEvent, None]:
        """Yields `AnswerDelta`s (guidance first, then the student's) and finally the `Answer`.

        `time_left` is the app's remaining deadline (seconds), passed on to the teacher call.
        """
        received = time.monotonic()
        deadline = None if time_left is None else received + time_left
        rendered = self.student_format.render(params.input)
        guidance = _GuidanceOutcome()
        usage, timings = Usage(), Timings()
        first_output_at = 0.0
        sequence: EngineSequence | None = None
        student_result: SequenceResult | None = None
        try:
            if params.mode == "teacher_only":
                # aclosing: a caller that stops at a yield (a dropped HTTP stream) aborts the teacher call at once.
                async with aclosing(self._stream_guidance(params, params.max_tokens, guidance, deadline)) as texts:
                    async for text in texts:
                        first_output_at = first_output_at or time.monotonic()
                        yield AnswerDelta(text, "guidance")
                if guidance.failure is not None:  # degraded: the student finishes what the teacher started
                    continued = _GuidanceJoiner(rendered).for_student(guidance.text)
                    sequence = self._submit(rendered, params, prompt_open=False, continuation=continued)
            elif params.mode == "gkt" and params.guidance_tokens > 0:
                # Submit first, so the student prefills its prompt while the guidance is on its way.
                sequence = self._submit(rendered, params, prompt_open=True)
                joiner = _GuidanceJoiner(rendered)
                async with aclosing(self._stream_guidance(params, params.guidance_tokens, guidance, deadline)) as texts:
                    async for text in texts:
                        first_output_at = first_output_at or time.monotonic()
                        sequence.append_text(joiner.for_student(text))
                        yield AnswerDelta(text, "guidance")
                if guidance.done is not None and guidance.done.finish_reason == "stop":
                    # The teacher finished the answer within K tokens: nothing is left for the student. Its prefill
                    # work so far is still accounted: the engine reports it when the cancel takes effect.
                    sequence.cancel()
                    student_result = await sequence.wait()
                    sequence = None
                else:
                    sequence.close_prompt()
            else:
                sequence = self._submit(rendered, params, prompt_open=False)

            if sequence is not None:
                async for text in sequence.stream():
                    first_output_at = first_output_at or time.monotonic()
                    yield AnswerDelta(text, "student")
                student_result = sequence.result
                sequence = None
        finally:
            if sequence is not None:  # the caller went away (cancel or deadline): free the slot now
                sequence.cancel()

        finish_reason: FinishReason = guidance.done.finish_reason if guidance.done is not None else "stop"
        student_text = ""
        if student_result is not None:
            if student_result.finish_reason == "error":
                raise BackendError(f"the student engine failed: {student_result.error}")
            if student_result.finish_reason != "cancelled":
                student_text = student_result.text
                finish_reason = "length" if student_result.finish_reason == "length" else "stop"
            usage.student_prompt_tokens = student_result.prompt_tokens
            usage.student_completion_tokens = student_result.completion_tokens
            usage.student_guidance_tokens = max(0, student_result.prompt_tokens - student_result.initial_prompt_tokens)
            usage.student_cached_prompt_tokens = student_result.cached_prompt_tokens
            timings.student_queue_seconds = student_result.queue_seconds
            timings.student_prefill_seconds = student_result.prefill_seconds
            timings.student_decode_seconds = student_result.decode_seconds
            if student_result.initial_prompt_prefilled_seconds:
                timings.student_prompt_prefilled_seconds = (
                    student_result.submitted_at - received + student_result.initial_prompt_prefilled_seconds
                )
        if guidance.done is not None:
            usage.teacher_prompt_tokens = guidance.done.prompt_tokens
            usage.teacher_completion_tokens = guidance.done.completion_tokens
            usage.teacher_cached_prompt_tokens = guidance.done.cached_prompt_tokens
            timings.teacher_time_to_first_token_seconds = guidance.done.timings.time_to_first_token_seconds
            timings.teacher_total_seconds = guidance.done.timings.total_seconds
        if guidance.finished_at:
            timings.guidance_wait_seconds = guidance.finished_at - received
        now = time.monotonic()
        timings.time_to_first_token_seconds = (first_output_at or now) - received
        timings.total_seconds = now - received
        yield Answer(
            guidance_text=guidance.text,
            student_text=student_text,
            mode=params.mode,
            finish_reason=finish_reason,
            usage=usage,
            timings=timings,
            degraded_reason=guidance.failure.reason if guidance.failure is not None else None,
        )

    async def _stream_guidance(
        self, params: GenerateParams, max_tokens: int, outcome: _GuidanceOutcome, deadline: float | None
    ) -> AsyncGenerator[str, None]:
        """Yields guidance text; on failure records it in `outcome` (the text so far stays usable)."""
        if not self.breaker.allow():
            outcome.failure = TeacherUnavailableError("circuit_open", "the teacher failed repeatedly; not calling it")
            outcome.finished_at = time.monotonic()
            return
        request = GuidanceParams(input=params.input, guidance_tokens=max_tokens, sampling=params.sampling)
        time_left = None if deadline is None else deadline - time.monotonic()
        try:
            async with aclosing(self.teacher.stream_guidance(request, params.mode, time_left)) as events:
                async for event in events:
                    if isinstance(event, GuidanceDelta):
                        outcome.text += event.text
                        yield event.text
                    else:
                        outcome.done = event
            self.breaker.record_success()
        except TeacherUnavailableError as failure:
            self.breaker.record_failure()
            logger.warning(
                "guidance failed (%s); answering degraded with %d chars of guidance", failure, len(outcome.text)
            )
            outcome.failure = failure
        outcome.finished_at = time.monotonic()

    def _submit(
        self, rendered: RenderedPrompt, params: GenerateParams, *, prompt_open: bool, continuation: str = ""
    ) -> EngineSequence:
        sampling = SamplingParams.of(params.sampling, params.max_tokens, rendered.stop)
        return self.engine.submit(rendered.text + continuation, sampling, prompt_open=prompt_open)
