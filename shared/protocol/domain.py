"""The plain dataclasses both tiers work with; protobuf is converted to and from these in `convert.py`, where a
tier meets the wire (its servicer, the edge's teacher client), and model code never sees it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Mode = Literal["gkt", "student_only", "teacher_only"]
# The modes as apps name them (`gkt ask --mode`, `EdgeClient`, the benchmark, the HTTP API's `gkt.mode`).
ModeName = Literal["gkt", "student", "teacher"]
MODES_BY_NAME: dict[ModeName, Mode] = {"gkt": "gkt", "student": "student_only", "teacher": "teacher_only"}
FinishReason = Literal["length", "stop", "cancelled"]
# Who wrote a part of the answer: the teacher's guidance, the student (unverified), the student's draft the teacher
# accepted, the teacher's correction of a draft.
Segment = Literal["guidance", "student", "verified", "correction"]
PolicyKind = Literal["fixed", "adaptive", "verify"]
# Which draft tokens a verifying teacher keeps (`AcceptanceRule` in shared/protocol/verification.py).
AcceptanceName = Literal["strict", "min_teacher_prob", "speculative"]
# Why the guidance ended.
GuidanceEnd = Literal["k_reached", "student_agreed", "teacher_finished", "deadline", "teacher_failed"]
# Why an answer was written without (all of) the teacher's guidance.
DegradedReason = Literal["unavailable", "deadline", "overloaded", "unauthorized", "error", "circuit_open"]
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class PromptInput:
    """What the user wrote: a raw prompt or chat messages (exactly one), plus an optional system prompt.

    `continue_final_message`: the messages end with the start of the assistant's answer, to be continued.
    """

    prompt: str = ""
    messages: tuple[ChatMessage, ...] = ()
    system_prompt: str = ""
    continue_final_message: bool = False

    def continued(self, text: str) -> PromptInput:
        """The same input with `text` already written as the start of the answer (an assistant prefill)."""
        if not text:
            return self
        if not self.messages:
            return replace(self, prompt=self.prompt + text)
        if self.continue_final_message:
            last = self.messages[-1]
            return replace(self, messages=(*self.messages[:-1], ChatMessage(last.role, last.content + text)))
        return replace(self, messages=(*self.messages, ChatMessage("assistant", text)), continue_final_message=True)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by both tiers."""

    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuidanceParams:
    """A request to the teacher: write at most `max_tokens` tokens (its token budget: K, a burst, or a teacher-only
    answer) for `input`."""

    input: PromptInput
    max_tokens: int
    sampling: Sampling


@dataclass(frozen=True)
class GuidanceDelta:
    """New guidance text, with the teacher's token counts so far (0 where a backend learns them only at the end)."""

    text: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class TeacherTimings:
    """The teacher's own durations, in seconds."""

    queue_seconds: float = 0.0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0


@dataclass(frozen=True)
class GuidanceDone:
    """The end of a guidance stream."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    timings: TeacherTimings = field(default_factory=TeacherTimings)
    cached_prompt_tokens: int = 0  # of `prompt_tokens`, served from the teacher's prefix cache


GuidanceEvent = GuidanceDelta | GuidanceDone


@dataclass(frozen=True)
class GenerateParams:
    """An app's request to the edge, with every default already filled in."""

    input: PromptInput
    mode: Mode
    guidance_tokens: int
    max_tokens: int
    sampling: Sampling
    policy: GuidancePolicy = field(default_factory=lambda: GuidancePolicy())


@dataclass(frozen=True)
class GuidancePolicy:
    """How much guidance GKT reads: K tokens (`fixed`), or (`adaptive`) at least `floor_tokens`, then until the
    student agrees with the teacher over the last `window` guidance tokens; `escalate` asks for bursts later.
    `verify`: K tokens (0 allowed), then drafts of `draft_tokens` student tokens that the teacher checks."""

    kind: PolicyKind = "fixed"
    floor_tokens: int = 8
    window: int = 8
    min_top1_fraction: float = 1.0
    min_mean_logprob: float = -1.0
    escalate: bool = False
    entropy_threshold: float = 2.5
    entropy_run: int = 3
    max_bursts: int = 2
    burst_tokens: int = 8
    # 8: the offline check (issue 22) kept ~55 % of 8-token drafts, ~5 answer tokens per teacher pass; longer drafts
    # are mostly rejected past their first error, and on a GPU or vLLM an 8-token pass costs about one decode step.
    draft_tokens: int = 8
    acceptance: AcceptanceName = "strict"
    min_teacher_prob: float = 0.2
    draft_min_prob: float = 0.0  # end a draft at a token the student is less sure of (0: fixed length)
    correction_tokens: int = 1


@dataclass(frozen=True)
class Burst:
    """A burst of teacher guidance inside the student's part of an answer (escalation)."""

    offset: int  # characters into the answer's text
    text: str
    teacher_tokens: int
    # The teacher's prompt for the burst (the question and the answer so far) and how much of it its cache served:
    # real teacher spend, but not what a teacher-only answer would have read.
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass
class Verification:
    """What teacher-verified drafting did in one answer (student tokens drafted and accepted, teacher tokens)."""

    rounds: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    corrected_tokens: int = 0
    teacher_scored_tokens: int = 0
    teacher_passes: int = 0
    # What the teacher's calls after the guidance read (Verify calls, a check of the student's end): real spend, but
    # not what a teacher-only answer would have read.
    teacher_prompt_tokens: int = 0
    teacher_cached_prompt_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0


@dataclass
class Usage:
    """Token counts per tier, each in its own tokenizer; and the whole answer's, as one model's answer reports them
    (in the student's tokenizer: the prompt once, the answer with its guidance; see `Usage` in edge.proto)."""

    teacher_prompt_tokens: int = 0
    teacher_completion_tokens: int = 0
    teacher_cached_prompt_tokens: int = 0
    student_prompt_tokens: int = 0
    student_completion_tokens: int = 0
    student_guidance_tokens: int = 0
    student_cached_prompt_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass
class Timings:
    """Durations per tier, in seconds."""

    teacher_time_to_first_token_seconds: float = 0.0
    teacher_total_seconds: float = 0.0
    guidance_wait_seconds: float = 0.0
    student_queue_seconds: float = 0.0
    student_prefill_seconds: float = 0.0
    student_decode_seconds: float = 0.0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    student_prompt_prefilled_seconds: float = 0.0


@dataclass
class Answer:
    """The edge's whole answer."""

    guidance_text: str
    student_text: str
    mode: Mode
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    degraded_reason: DegradedReason | None = None  # None: the answer had all the guidance it asked for
    guidance_end: GuidanceEnd | None = None  # None: no guidance was asked for
    bursts: tuple[Burst, ...] = ()
    guidance_tokens: int = 0  # K the request asked for (GKT mode), to tell what stopping early saved
    verification: Verification | None = None  # the `verify` policy's counts

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    @property
    def text(self) -> str:
        return self.guidance_text + self.student_text


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of a streamed answer."""

    text: str
    segment: Segment


AnswerEvent = AnswerDelta | Answer


@dataclass(frozen=True)
class ServerInfo:
    """What a tier's server runs (see `ServerInfo` in common.proto)."""

    tier: str
    model: str
    model_file: str = ""
    backend: str = ""
    dtype: str = ""
    threads: int = 0
    slots: int = 0
    hardware: str = ""
    version: str = ""
