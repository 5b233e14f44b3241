"""The edge's request flow: guidance streams in from the teacher while the student prefills, then the student writes.

Requests wait in the engine's bounded queue for one of its slots. In GKT mode the student's prompt enters the
engine *open*: the engine prefills it while the teacher is still streaming, and each guidance delta is appended
as it arrives, so cloud latency and edge prefill overlap.

Guidance policies: `fixed` reads K teacher tokens (the paper). `adaptive` asks for K too, but from a floor of
tokens on reads only until the student, which scores every guidance token as it prefills it, agrees with the
teacher; the teacher's request is then stopped (aborted: the tokens it did not write are not paid for). With
`escalate`, a student that grows unsure while it writes pauses and asks the teacher for a short burst continuing
the answer so far.

`max_tokens` bounds the whole answer in every mode, counted in the student's tokenizer (`answer_budget`): K and each
burst are clipped to what is left, teacher text is cut where it would pass it, and the student writes only the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from edge_student.answer_budget import AnswerBudget
from edge_student.answer_progress import Progress, TeacherCall
from edge_student.circuit_breaker import CircuitBreaker
from edge_student.guidance_policy import UncertaintyWatch, student_agrees
from edge_student.teacher_client import TeacherClient, TeacherUnavailableError
from edge_student.verified_drafting import VerifiedDrafting
from shared.llama.engine import BatchedLlamaEngine, EngineSequence, SamplingParams, SequenceResult
from shared.llama.text_stream import TextStream
from shared.prompt_formats import PromptFormat, RenderedPrompt
from shared.protocol.domain import (
    Answer,
    AnswerDelta,
    AnswerEvent,
    Burst,
    FinishReason,
    GenerateParams,
    GuidanceDelta,
    GuidanceEnd,
    GuidanceParams,
    PromptInput,
    Timings,
    Usage,
)
from shared.protocol.errors import BackendError

logger = logging.getLogger(__name__)

# Room in the student's context beyond prompt + max_tokens: the answer's parts are counted one by one, and text
# appended to the prompt can tokenise a little differently across each hand-off (guidance, bursts, the student's).
HANDOFF_MARGIN_TOKENS = 8


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
        """Yields `AnswerDelta`s (guidance first, then the student's, with any bursts) and finally the `Answer`.

        `time_left` is the app's remaining deadline (seconds), passed on to every teacher call.
        """
        received = time.monotonic()
        deadline = None if time_left is None else received + time_left
        # Rendering and tokenising a long conversation take milliseconds: off the loop that serves every stream.
        rendered = await asyncio.to_thread(self.student_format.render, params.input)
        model = self.engine.model
        progress = Progress(AnswerBudget(model, params.max_tokens))
        # The request's prompt once, as the student reads it: what a student-only answer reports, in every mode.
        prompt_tokens = len(await asyncio.to_thread(model.tokenize_pieces, rendered.pieces))
        sequence: EngineSequence | None = None
        result: SequenceResult | None = None
        try:
            if params.mode == "teacher_only":
                call = TeacherCall()
                part = progress.budget.text()
                # aclosing everywhere: a caller that stops at a yield (a dropped stream) aborts the teacher call and
                # frees the student at once, not when the generators are collected.
                stream = self._stream(params, params.input, params.max_tokens, call, deadline, progress)
                async with aclosing(stream) as texts:
                    async for text in texts:
                        kept = part.take(text)
                        if kept:
                            progress.guidance_text += kept
                            yield AnswerDelta(kept, "guidance")
                        if part.cut:  # at max_tokens in the student's tokenizer: closing the stream stops the teacher
                            call.finished_at = time.monotonic()
                            progress.budget.capped = True
                            break
                progress.failure = call.failure
                if call.failure is not None:  # degraded: the student finishes what the teacher started
                    if progress.budget.left > 0:
                        continued = _GuidanceJoiner(rendered).for_student(progress.guidance_text)
                        sequence = await self._submit(
                            rendered, params, prompt_open=False, continuation=continued, max_tokens=progress.budget.left
                        )
                    else:
                        progress.budget.capped = True
            elif params.mode == "gkt" and (params.guidance_tokens > 0 or params.policy.kind == "verify"):
                # Submit first, so the student prefills its prompt while the guidance is on its way.
                sequence = await self._submit(rendered, params, prompt_open=True)
                if params.guidance_tokens > 0:
                    async with aclosing(self._guide(params, sequence, rendered, progress, deadline)) as guided:
                        async for delta in guided:
                            yield delta
                room = progress.end != "teacher_finished" and progress.budget.left > 0
                if params.policy.kind == "verify" and room:
                    drafting = VerifiedDrafting(
                        self.teacher,
                        self.breaker,
                        lambda given, tokens, call: self._stream(params, given, tokens, call, deadline, progress),
                        params,
                        sequence,
                        rendered,
                        progress,
                        deadline,
                    )
                    async with aclosing(drafting.rounds()) as checked:
                        async for delta in checked:
                            yield delta
                    progress.drafted_tokens = sequence.completion_count
                    if drafting.open_for_student:  # the teacher failed: the student writes the rest
                        sequence.close_prompt(max(1, progress.budget.left))
                    else:
                        sequence.cancel()
                        result = await sequence.wait()
                        sequence = None
                elif progress.end == "teacher_finished" or progress.budget.left <= 0:
                    # Nothing is left for the student (the teacher finished the answer, or the guidance took all of
                    # max_tokens); its prefill so far is still accounted when the cancel lands.
                    progress.budget.capped = progress.end != "teacher_finished"
                    sequence.cancel()
                    result = await sequence.wait()
                    sequence = None
                else:
                    sequence.close_prompt(progress.budget.left)
            else:
                sequence = await self._submit(rendered, params, prompt_open=False)

            if sequence is not None:
                async with aclosing(self._write(params, sequence, progress, deadline)) as written:
                    async for delta in written:
                        yield delta
                result = sequence.result
                sequence = None
        finally:
            if sequence is not None:  # the caller went away (cancel or deadline): free the slot now
                sequence.cancel()
        yield self._assemble(params, progress, result, received, prompt_tokens)

    # ---- the guidance ------------------------------------------------------------------------------------------

    async def _guide(
        self,
        params: GenerateParams,
        sequence: EngineSequence,
        rendered: RenderedPrompt,
        progress: Progress,
        deadline: float | None,
    ) -> AsyncGenerator[AnswerDelta, None]:
        """Streams K tokens of guidance into the open prompt; adaptive: from the floor on, stops the teacher's
        request as soon as the student agrees. One teacher request either way, so an adaptive answer whose student
        never agrees is exactly the fixed answer."""
        policy = params.policy
        joiner = _GuidanceJoiner(rendered)
        call = TeacherCall()
        part = progress.budget.text()  # K is at most max_tokens, but K teacher tokens may be more student tokens
        # The answer's stop sequences apply to the guidance too (the teacher's own prompt format may not know the
        # student's): text that could begin one is held back until it is known not to.
        guard = TextStream(rendered.stop + params.sampling.stop)
        stream = self._stream(params, params.input, params.guidance_tokens, call, deadline, progress)

        def agreed() -> bool:
            read = call.last.completion_tokens if call.last is not None else 0
            return read >= policy.floor_tokens and student_agrees(policy, sequence.scores)

        items = _until_agreed(stream, sequence, agreed) if policy.kind == "adaptive" else stream
        async with aclosing(stream), aclosing(items):  # items first: `_until_agreed` may hold a pending read of stream
            async for item in items:
                if item is None:  # the student agreed: the stream is closed, which stops the teacher's request
                    call.finished_at = time.monotonic()
                    progress.end = "student_agreed"
                    return
                released = guard.push(part.take(item).encode())
                if released:
                    sequence.append_text(joiner.for_student(released))
                    progress.guidance_text += released
                    yield AnswerDelta(released, "guidance")
                if guard.stopped:  # a stop sequence inside the guidance ends the answer before it
                    call.finished_at = time.monotonic()
                    progress.end = "teacher_finished"
                    return
                if part.cut:  # the guidance alone reached max_tokens: the teacher's request is stopped
                    call.finished_at = time.monotonic()
                    break
        if tail := guard.flush():
            sequence.append_text(joiner.for_student(tail))
            progress.guidance_text += tail
            yield AnswerDelta(tail, "guidance")
        progress.failure, progress.end = call.failure, self._end_of(call)

    @staticmethod
    def _end_of(call: TeacherCall) -> GuidanceEnd:
        if call.failure is not None:
            return "deadline" if call.failure.reason == "deadline" else "teacher_failed"
        return "teacher_finished" if call.teacher_finished else "k_reached"

    async def _stream(
        self,
        params: GenerateParams,
        prompt_input: PromptInput,
        tokens: int,
        call: TeacherCall,
        deadline: float | None,
        progress: Progress,
    ) -> AsyncGenerator[str, None]:
        """Yields one teacher call's text and records it in `call` (a failure keeps the text so far)."""
        progress.calls.append(call)
        if not self.breaker.allow():
            call.failure = TeacherUnavailableError("circuit_open", "the teacher failed repeatedly; not calling it")
            call.finished_at = time.monotonic()
            return
        request = GuidanceParams(input=prompt_input, max_tokens=tokens, sampling=params.sampling)
        time_left = None if deadline is None else deadline - time.monotonic()
        try:
            async with aclosing(self.teacher.stream_guidance(request, params.mode, time_left)) as events:
                async for event in events:
                    if isinstance(event, GuidanceDelta):
                        call.text += event.text
                        call.last = event
                        progress.output()
                        yield event.text
                    else:
                        call.done = event
            self.breaker.record_success()
        except (GeneratorExit, asyncio.CancelledError):
            # Stopped by the edge (the student agreed, the app went away or its deadline passed) while the teacher
            # was delivering: a teacher that answered is healthy. Without an outcome a half-open breaker would stay
            # half-open, and failures on either side of these calls would count as consecutive.
            if call.last is not None:
                self.breaker.record_success()
            call.finished_at = time.monotonic()
            raise
        except TeacherUnavailableError as failure:
            if failure.teacher_at_fault:  # failures the caller caused say nothing about the teacher's health
                self.breaker.record_failure()
            logger.warning("guidance failed (%s) after %d chars of it", failure, len(call.text))
            call.failure = failure
        call.finished_at = time.monotonic()

    # ---- the student -------------------------------------------------------------------------------------------

    async def _write(
        self, params: GenerateParams, sequence: EngineSequence, progress: Progress, deadline: float | None
    ) -> AsyncGenerator[AnswerDelta, None]:
        """The student's text; with escalation, pauses for teacher bursts when the student grows unsure."""
        watch = UncertaintyWatch(params.policy)
        while True:
            pausing = False
            async for text in sequence.stream():
                progress.output()
                progress.student_text += text
                yield AnswerDelta(text, "student")
                if not pausing and params.mode == "gkt" and watch.wants_burst(sequence.entropies):
                    sequence.pause()
                    pausing = True
            if sequence.result is not None:
                return
            # Paused: a burst of teacher guidance continues the answer written so far, within what is left of it.
            budget = progress.budget
            budget.student_tokens = sequence.completion_count
            if budget.left > 0:
                burst = TeacherCall(burst=True)  # a failed burst leaves the answer as it is: the student goes on
                offset = len(progress.guidance_text) + len(progress.student_text)
                continued = params.input.continued(progress.guidance_text + progress.student_text)
                part = budget.text()
                tokens = min(params.policy.burst_tokens, budget.left)
                stream = self._stream(params, continued, tokens, burst, deadline, progress)
                async with aclosing(stream) as texts:
                    async for text in texts:
                        kept = part.take(text)
                        if kept:
                            sequence.append_text(kept)
                            progress.student_text += kept
                            yield AnswerDelta(kept, "guidance")
                        if part.cut:
                            burst.finished_at = time.monotonic()
                            break
                counts = burst.done or burst.last
                progress.bursts.append(
                    Burst(
                        offset=offset,
                        text=part.text,
                        teacher_tokens=counts.completion_tokens if counts else 0,
                        prompt_tokens=counts.prompt_tokens if counts else 0,
                        cached_prompt_tokens=counts.cached_prompt_tokens if counts else 0,
                    )
                )
                watch.burst_taken()
            if budget.left <= 0:  # the answer is at max_tokens: the student writes no more
                budget.capped = True
                sequence.cancel()
                await sequence.wait()
                return
            sequence.close_prompt(budget.left)

    async def _submit(
        self,
        rendered: RenderedPrompt,
        params: GenerateParams,
        *,
        prompt_open: bool,
        continuation: str = "",
        max_tokens: int | None = None,
    ) -> EngineSequence:
        """The student's sequence; `max_tokens` (default: the request's) bounds what it generates, and appended text
        with it: guidance and bursts are part of the same answer, so the context needs room for `max_tokens` only."""
        gkt = params.mode == "gkt" and params.guidance_tokens > 0
        policy = params.policy
        verify = params.mode == "gkt" and policy.kind == "verify"
        sampling = dataclasses.replace(
            SamplingParams.of(params.sampling, max_tokens or params.max_tokens, rendered.stop),
            score_appended=gkt and policy.kind == "adaptive",  # the student's agreement with the guidance
            report_entropy=gkt and policy.escalate,  # its uncertainty while it writes
            # The draft's probabilities: speculative acceptance's q, and where an adaptive draft ends.
            report_probability=verify and (policy.acceptance == "speculative" or policy.draft_min_prob > 0),
        )
        budget = HANDOFF_MARGIN_TOKENS if prompt_open else 0
        if verify:  # a draft beyond what the answer keeps, and each correction's hand-off
            budget += policy.draft_tokens + HANDOFF_MARGIN_TOKENS
        if gkt and policy.escalate:
            budget += 2 * policy.max_bursts  # two more hand-offs per burst
        # The admission check tokenises the prompt: in a worker thread, not on the event loop.
        submitting = asyncio.ensure_future(
            asyncio.to_thread(
                self.engine.submit,
                rendered.with_untrusted(continuation),
                sampling,
                prompt_open=prompt_open,
                appended_budget=budget,
                output_context=continuation,
                loop=asyncio.get_running_loop(),
            )
        )
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:  # the caller left while the thread submitted: free the slot once it has one
            submitting.add_done_callback(_cancel_submitted)
            raise

    # ---- the answer --------------------------------------------------------------------------------------------

    @staticmethod
    def _assemble(
        params: GenerateParams,
        progress: Progress,
        result: SequenceResult | None,
        received: float,
        prompt_tokens: int,
    ) -> Answer:
        """The `Answer`: text, finish reason, usage (the whole answer's, and per tier) and timings per tier from the
        calls and the student's result."""
        usage, timings = Usage(), Timings()
        finish_reason: FinishReason = "stop"
        if progress.calls and progress.calls[-1].done is not None and result is None:
            finish_reason = progress.calls[-1].done.finish_reason
        if result is not None:
            if result.finish_reason == "error":
                raise BackendError(f"the student engine failed: {result.error}")
            if result.finish_reason != "cancelled":
                finish_reason = "length" if result.finish_reason == "length" else "stop"
            usage.student_prompt_tokens = result.prompt_tokens
            usage.student_completion_tokens = result.completion_tokens
            usage.student_guidance_tokens = max(0, result.prompt_tokens - result.initial_prompt_tokens)
            usage.student_cached_prompt_tokens = result.cached_prompt_tokens
            timings.student_queue_seconds = result.queue_seconds
            timings.student_prefill_seconds = result.prefill_seconds
            timings.student_decode_seconds = result.decode_seconds
            if result.initial_prompt_prefilled_seconds:
                timings.student_prompt_prefilled_seconds = (
                    result.submitted_at - received + result.initial_prompt_prefilled_seconds
                )
        if progress.budget.capped:
            finish_reason = "length"
        for call in progress.calls:
            counts = call.done or call.last  # a call stopped early counts what the teacher had written
            if counts is not None:
                usage.teacher_prompt_tokens += counts.prompt_tokens
                usage.teacher_completion_tokens += counts.completion_tokens
                usage.teacher_cached_prompt_tokens += counts.cached_prompt_tokens
            if call.done is not None:
                timings.teacher_total_seconds += call.done.timings.total_seconds
            elif call.finished_at:
                timings.teacher_total_seconds += call.finished_at - call.started_at
        if progress.verification is not None:
            for checked in progress.verify_usage:
                usage.teacher_prompt_tokens += checked.prompt_tokens
                usage.teacher_cached_prompt_tokens += checked.cached_prompt_tokens
                usage.teacher_completion_tokens += checked.generated_tokens
            timings.teacher_total_seconds += progress.verify_seconds
        first = progress.calls[0] if progress.calls else None
        if first is not None and first.done is not None:
            timings.teacher_time_to_first_token_seconds = first.done.timings.time_to_first_token_seconds
        guidance_calls = [c for c in progress.calls if c.finished_at and not c.burst]
        if guidance_calls:
            timings.guidance_wait_seconds = guidance_calls[-1].finished_at - received
        _whole_answer_usage(usage, progress.budget, result, prompt_tokens, progress.drafted_tokens)
        now = time.monotonic()
        timings.time_to_first_token_seconds = (progress.first_output_at or now) - received
        timings.total_seconds = now - received
        return Answer(
            guidance_text=progress.guidance_text,
            student_text=progress.student_text,
            mode=params.mode,
            finish_reason=finish_reason,
            usage=usage,
            timings=timings,
            degraded_reason=progress.failure.reason if progress.failure is not None else None,
            guidance_end=progress.end,
            bursts=tuple(progress.bursts),
            guidance_tokens=params.guidance_tokens if params.mode == "gkt" else 0,
            verification=progress.verification,
        )


def _whole_answer_usage(
    usage: Usage, budget: AnswerBudget, result: SequenceResult | None, prompt_tokens: int, drafted_tokens: int = 0
) -> None:
    """OpenAI's usage for the answer, in the student's tokenizer: the prompt once, the answer's tokens (teacher text
    and checked drafts counted by the student's tokenizer, plus what the student generated after drafting), and the
    prompt tokens a prefix cache served (the student's; the teacher's share of its own prompt when the student did
    not read it)."""
    usage.prompt_tokens = prompt_tokens
    written = max(0, result.completion_tokens - drafted_tokens) if result is not None else 0
    usage.completion_tokens = budget.text_tokens + written
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    if result is not None and result.initial_prompt_tokens:
        usage.cached_prompt_tokens = min(result.cached_initial_prompt_tokens, prompt_tokens)
    elif usage.teacher_prompt_tokens:
        share = usage.teacher_cached_prompt_tokens / usage.teacher_prompt_tokens
        usage.cached_prompt_tokens = min(round(prompt_tokens * share), prompt_tokens)


def _cancel_submitted(submitting: asyncio.Future[EngineSequence]) -> None:
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel()


async def _until_agreed(
    stream: AsyncGenerator[str, None], sequence: EngineSequence, check: Callable[[], bool]
) -> AsyncGenerator[str | None, None]:
    """The stream's items until `check()` (asked whenever the student reports progress or an item arrives) turns
    true: then one None, and the stream is closed, which stops the teacher's request."""
    pending: asyncio.Future[str] = asyncio.ensure_future(anext(stream))
    try:
        while True:
            seen = sequence.progress_version
            if check():
                yield None
                return
            progressed = asyncio.ensure_future(sequence.progressed_past(seen))
            waiting: set[asyncio.Future[Any]] = {pending, progressed}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            progressed.cancel()
            if not pending.done():
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(anext(stream))
    finally:
        if not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await stream.aclose()
