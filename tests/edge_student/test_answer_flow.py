"""The edge's request flow on its own: a small fake engine and a scripted teacher, no model, no network (fast).

The same flow runs on the real engine and real teachers in test_gkt_flow.py, test_degraded.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from edge_student.answer_flow import AnswerFlow
from edge_student.circuit_breaker import CircuitBreaker
from edge_student.teacher_client import TeacherUnavailableError
from shared.llama.engine import SamplingParams, SequenceResult
from shared.prompt_formats import CompletionFormat
from shared.protocol.domain import (
    Answer,
    AnswerDelta,
    DegradedReason,
    FinishReason,
    GenerateParams,
    GuidanceDelta,
    GuidanceDone,
    GuidanceEvent,
    GuidanceParams,
    Mode,
    PromptInput,
    Sampling,
)
from shared.protocol.errors import BackendError


@dataclass
class FakeSequence:
    """Writes `reply` once its prompt is closed; records what it was given."""

    prompt: str
    params: SamplingParams
    prompt_open: bool
    reply: str
    outcome: str = "stop"  # how the student ends: "stop", or "error" for a failed engine
    appended: list[str] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    cancelled: bool = False
    result: SequenceResult | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def append_text(self, text: str) -> None:
        assert self.prompt_open, "text appended to a closed prompt"
        self.appended.append(text)

    def close_prompt(self) -> None:
        self.prompt_open = False
        self.closed.set()

    def cancel(self) -> None:
        self.cancelled = True
        self.closed.set()

    def _result(self, text: str, reason: str) -> SequenceResult:
        prompt_tokens = len((self.prompt + "".join(self.appended)).split())
        return SequenceResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(text.split()),
            queue_seconds=0.0,
            prefill_seconds=0.0,
            decode_seconds=0.0,
            time_to_first_token_seconds=0.0,
            total_seconds=0.0,
            initial_prompt_prefilled_seconds=0.0,
            initial_prompt_tokens=len(self.prompt.split()),
            cached_prompt_tokens=0,
            submitted_at=time.monotonic(),
        )

    async def stream(self) -> AsyncIterator[str]:
        if not self.prompt_open:
            self.closed.set()
        await self.closed.wait()
        if self.cancelled:
            self.result = self._result("", "cancelled")
            return
        for word in self.reply.split(" "):
            yield word + " "
        self.result = self._result(self.reply + " ", self.outcome)

    async def wait(self) -> SequenceResult:
        async for _ in self.stream():
            pass
        assert self.result is not None
        return self.result


class FakeEngine:
    def __init__(self, reply: str = "the student's words", outcome: str = "stop") -> None:
        self.reply, self.outcome = reply, outcome
        self.sequences: list[FakeSequence] = []

    def submit(
        self,
        pieces: tuple[tuple[str, bool], ...],
        params: SamplingParams,
        *,
        prompt_open: bool = False,
        appended_budget: int = 0,
        output_context: str = "",
    ) -> FakeSequence:
        sequence = FakeSequence("".join(text for text, _ in pieces), params, prompt_open, self.reply, self.outcome)
        self.sequences.append(sequence)
        return sequence


class ScriptedTeacherClient:
    """Streams `deltas`, then ends with `finish` or fails with `failure` (after the deltas)."""

    def __init__(
        self,
        deltas: Sequence[str] = (" The", " teacher", " starts"),
        finish: FinishReason = "length",
        failure: DegradedReason | None = None,
    ) -> None:
        self.deltas, self.finish, self.failure = list(deltas), finish, failure
        self.calls: list[tuple[GuidanceParams, Mode, float | None]] = []

    async def stream_guidance(
        self, params: GuidanceParams, mode: Mode, time_left: float | None = None
    ) -> AsyncIterator[GuidanceEvent]:
        self.calls.append((params, mode, time_left))
        for delta in self.deltas[: params.max_tokens]:
            yield GuidanceDelta(delta)
        if self.failure is not None:
            raise TeacherUnavailableError(self.failure, "scripted failure")
        yield GuidanceDone(prompt_tokens=7, completion_tokens=len(self.deltas), finish_reason=self.finish)


def params(mode: Mode = "gkt", guidance_tokens: int = 3, prompt: str = "Q: why?\nA:") -> GenerateParams:
    return GenerateParams(
        input=PromptInput(prompt=prompt),
        mode=mode,
        guidance_tokens=guidance_tokens,
        max_tokens=16,
        sampling=Sampling(temperature=0.0, top_p=1.0, seed=1, stop=("\nQ:",)),
    )


def flow(teacher: ScriptedTeacherClient, engine: FakeEngine, breaker: CircuitBreaker | None = None) -> AnswerFlow:
    return AnswerFlow(engine, teacher, CompletionFormat(), breaker or CircuitBreaker(3, 10.0))  # type: ignore[arg-type]


async def collect(flow_: AnswerFlow, request: GenerateParams) -> tuple[list[AnswerDelta], Answer]:
    deltas, answer = [], None
    async for event in flow_.answer(request):
        if isinstance(event, Answer):
            answer = event
        else:
            deltas.append(event)
    assert answer is not None
    return deltas, answer


async def test_gkt_appends_guidance_to_an_open_prompt_then_the_student_writes() -> None:
    engine, teacher = FakeEngine(), ScriptedTeacherClient()
    deltas, answer = await collect(flow(teacher, engine), params())
    (sequence,) = engine.sequences
    assert sequence.prompt == "Q: why?\nA:" and sequence.appended == [" The", " teacher", " starts"]
    assert not sequence.prompt_open and not sequence.cancelled
    assert [d.segment for d in deltas] == ["guidance"] * 3 + ["student"] * 3
    assert answer.guidance_text == " The teacher starts" and answer.student_text == "the student's words "
    assert answer.text == "".join(d.text for d in deltas)
    assert sequence.params.stop == ("\nQ:",) and sequence.params.seed == 1
    ((request, mode, _),) = teacher.calls
    assert request.max_tokens == 3 and mode == "gkt"
    assert answer.usage.teacher_prompt_tokens == 7 and answer.usage.teacher_completion_tokens == 3
    assert answer.usage.student_guidance_tokens == 3 and not answer.degraded


async def test_teacher_finishing_within_k_cancels_the_student_but_counts_its_prefill() -> None:
    engine = FakeEngine()
    _, answer = await collect(flow(ScriptedTeacherClient(finish="stop"), engine), params())
    assert engine.sequences[0].cancelled
    assert answer.student_text == "" and answer.finish_reason == "stop"
    assert answer.usage.student_prompt_tokens > 0 and answer.usage.student_completion_tokens == 0


@pytest.mark.parametrize("reason", ["unavailable", "deadline", "error"])
async def test_a_failing_teacher_gives_a_degraded_answer_from_the_guidance_so_far(reason: DegradedReason) -> None:
    engine, breaker = FakeEngine(), CircuitBreaker(3, 10.0)
    _, answer = await collect(flow(ScriptedTeacherClient(failure=reason), engine, breaker), params())
    assert answer.degraded and answer.degraded_reason == reason
    assert answer.guidance_text == " The teacher starts" and answer.student_text
    assert breaker._failures == 1


async def test_an_open_breaker_answers_student_only_without_calling_the_teacher() -> None:
    breaker, teacher = CircuitBreaker(1, 60.0), ScriptedTeacherClient()
    breaker.record_failure()
    _, answer = await collect(flow(teacher, FakeEngine(), breaker), params())
    assert teacher.calls == []
    assert answer.degraded_reason == "circuit_open" and answer.guidance_text == "" and answer.student_text


async def test_student_only_never_calls_the_teacher_and_teacher_only_never_runs_the_student() -> None:
    teacher, engine = ScriptedTeacherClient(), FakeEngine()
    _, student = await collect(flow(teacher, engine), params("student_only"))
    assert teacher.calls == [] and student.guidance_text == "" and student.student_text
    engine.sequences.clear()
    _, only = await collect(flow(teacher, engine), params("teacher_only"))
    assert engine.sequences == [] and only.student_text == "" and only.guidance_text == " The teacher starts"
    ((request, mode, _),) = teacher.calls
    assert mode == "teacher_only" and request.max_tokens == 16  # the whole answer: max_tokens


async def test_teacher_only_that_fails_is_finished_by_the_student() -> None:
    engine = FakeEngine()
    _, answer = await collect(flow(ScriptedTeacherClient(failure="unavailable"), engine), params("teacher_only"))
    (sequence,) = engine.sequences
    assert sequence.prompt.endswith(" The teacher starts") and not sequence.prompt_open
    assert answer.degraded and answer.student_text


async def test_a_caller_that_goes_away_frees_the_student_slot() -> None:
    engine = FakeEngine()
    events = flow(ScriptedTeacherClient(), engine).answer(params())
    await anext(events)  # the first guidance delta
    await events.aclose()
    assert engine.sequences[0].cancelled


async def test_k_zero_in_gkt_mode_is_the_student_alone() -> None:
    teacher, engine = ScriptedTeacherClient(), FakeEngine()
    _, answer = await collect(flow(teacher, engine), params(guidance_tokens=0))
    assert teacher.calls == [] and answer.student_text and not engine.sequences[0].prompt_open


async def test_a_failed_student_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="the student engine failed"):
        await collect(flow(ScriptedTeacherClient(), FakeEngine(outcome="error")), params())
