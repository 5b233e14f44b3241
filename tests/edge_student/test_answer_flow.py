"""The edge's request flow on its own: a small fake engine and a scripted teacher, no model, no network (fast).

The same flow runs on the real engine and real teachers in test_gkt_flow.py, test_degraded.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import re
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
    limit: int | None = None  # what `close_prompt` allowed it to write
    completion_count: int = 0

    def append_text(self, text: str) -> None:
        assert self.prompt_open, "text appended to a closed prompt"
        self.appended.append(text)

    def close_prompt(self, max_tokens: int | None = None) -> None:
        self.prompt_open = False
        self.limit = max_tokens
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
        words = self.reply.split(" ")[: self.limit or self.params.max_tokens]
        for word in words:
            self.completion_count += 1
            yield word + " "
        self.result = self._result(" ".join(words) + " ", self.outcome)

    async def wait(self) -> SequenceResult:
        async for _ in self.stream():
            pass
        assert self.result is not None
        return self.result


class WordTokenizer:
    """A token per word with its leading white space (lossless, like a byte-level tokenizer)."""

    def __init__(self) -> None:
        self.words: list[str] = []

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        tokens = []
        for word in re.findall(r"\s*\S+|\s+$", text):
            if word not in self.words:
                self.words.append(word)
            tokens.append(self.words.index(word))
        return tokens

    def tokenize_pieces(self, pieces: Sequence[tuple[str, bool]]) -> list[int]:
        return self.tokenize("".join(text for text, _ in pieces))

    def token_bytes(self, token: int) -> bytes:
        return self.words[token].encode()


class FakeEngine:
    def __init__(self, reply: str = "the student's words", outcome: str = "stop") -> None:
        self.reply, self.outcome = reply, outcome
        self.sequences: list[FakeSequence] = []
        self.model = WordTokenizer()

    def submit(
        self,
        pieces: tuple[tuple[str, bool], ...],
        params: SamplingParams,
        *,
        prompt_open: bool = False,
        appended_budget: int = 0,
        output_context: str = "",
        loop: object = None,
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


def params(
    mode: Mode = "gkt", guidance_tokens: int = 3, prompt: str = "Q: why?\nA:", max_tokens: int = 16
) -> GenerateParams:
    return GenerateParams(
        input=PromptInput(prompt=prompt),
        mode=mode,
        guidance_tokens=guidance_tokens,
        max_tokens=max_tokens,
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


# ---- max_tokens: the whole answer, in the student's tokenizer ----------------------------------------------------


async def test_the_student_writes_only_what_the_guidance_left_of_max_tokens() -> None:
    engine = FakeEngine(reply="one two three four five six")
    _, answer = await collect(flow(ScriptedTeacherClient(), engine), params(max_tokens=5))
    (sequence,) = engine.sequences
    assert sequence.limit == 2, "3 guidance tokens of 5: 2 left for the student"
    assert answer.student_text == "one two " and answer.finish_reason == "stop"
    usage = answer.usage
    assert (usage.completion_tokens, usage.prompt_tokens) == (5, 3)  # "Q:", " why?", "\nA:"
    assert usage.total_tokens == 8


@pytest.mark.parametrize("mode", ["gkt", "teacher_only"])
async def test_teacher_text_is_cut_at_max_tokens_and_ends_with_length(mode: Mode) -> None:
    engine = FakeEngine()
    deltas, answer = await collect(flow(ScriptedTeacherClient(), engine), params(mode, max_tokens=2))
    assert answer.guidance_text == " The teacher" and "".join(d.text for d in deltas) == " The teacher"
    assert answer.student_text == "" and answer.finish_reason == "length"
    assert answer.usage.completion_tokens == 2 and answer.usage.prompt_tokens == 3
    if mode == "gkt":
        assert engine.sequences[0].cancelled and engine.sequences[0].appended == [" The", " teacher"]
    else:
        assert engine.sequences == []


async def test_guidance_that_fills_max_tokens_exactly_leaves_the_student_nothing() -> None:
    engine = FakeEngine()
    _, answer = await collect(flow(ScriptedTeacherClient(), engine), params(max_tokens=3))
    assert engine.sequences[0].cancelled and answer.student_text == ""
    assert answer.finish_reason == "length" and answer.usage.completion_tokens == 3


async def test_prompt_tokens_are_the_prompt_once_in_every_mode() -> None:
    counts = set()
    for mode in ("gkt", "student_only", "teacher_only"):
        _, answer = await collect(flow(ScriptedTeacherClient(), FakeEngine()), params(mode))  # type: ignore[arg-type]
        counts.add(answer.usage.prompt_tokens)
        assert answer.usage.completion_tokens == len(answer.guidance_text.split()) + len(answer.student_text.split())
    assert counts == {3}


async def test_a_stop_sequence_inside_the_guidance_ends_the_answer_there() -> None:
    """The teacher's own format may not know the student's stop (`\\nQ:` of the paper's transcript): the guidance is
    cut before it, none of it leaks (not even the `\\n` that could begin it), the student writes nothing."""
    engine = FakeEngine()
    teacher = ScriptedTeacherClient(deltas=[" It is 5.", "\n", "Q", ": And", " now?"])
    deltas, answer = await collect(flow(teacher, engine), params(guidance_tokens=5))
    assert "".join(d.text for d in deltas) == answer.text == " It is 5."
    assert answer.finish_reason == "stop" and answer.student_text == ""
    assert engine.sequences[0].cancelled
    assert "".join(engine.sequences[0].appended) == " It is 5."
