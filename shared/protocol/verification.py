"""Teacher-verified drafting's plain dataclasses (the `Verify` RPC's request and verdict), free of protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.protocol.domain import FinishReason, PromptInput, Sampling

AcceptanceRule = Literal["strict", "min_teacher_prob", "speculative"]

# Limits of one verification (documented on `VerifyRequest` in teacher.proto).
MAX_DRAFT_CHARS = 2048
MAX_DRAFT_TOKENS = 256  # teacher tokens of the draft
MAX_CORRECTION_TOKENS = 64


@dataclass(frozen=True)
class DraftPiece:
    """One student token of a draft: its character span in the draft and the probability the student gave it."""

    start: int
    end: int
    probability: float


@dataclass(frozen=True)
class Acceptance:
    """Which draft tokens the teacher keeps: its top choices (`strict`), those it gives at least
    `min_teacher_prob`, or by speculative sampling against the student's `draft_pieces`."""

    rule: AcceptanceRule = "strict"
    min_teacher_prob: float = 0.0
    draft_pieces: tuple[DraftPiece, ...] = ()


@dataclass(frozen=True)
class VerifyParams:
    """A request to the teacher: check `draft_text`, written after `accepted_text`, as the answer to `input`."""

    input: PromptInput
    accepted_text: str
    draft_text: str
    sampling: Sampling
    acceptance: Acceptance = field(default_factory=Acceptance)
    correction_tokens: int = 1

    @property
    def scored_input(self) -> PromptInput:
        """The input with the accepted text and the draft written as the start of the answer (an assistant prefill
        for chat, text appended for raw prompts): what the teacher scores."""
        return self.input.continued(self.accepted_text + self.draft_text)


@dataclass(frozen=True)
class ScoredToken:
    """The teacher's view of one of its own tokens of the draft (span in characters of the draft)."""

    start: int
    end: int
    logprob: float
    top1: bool
    accepted: bool


@dataclass(frozen=True)
class VerifyUsage:
    """Token counts of one verification in the teacher's tokenizer, summed over its engine requests."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    scored_tokens: int = 0
    generated_tokens: int = 0
    passes: int = 0


@dataclass(frozen=True)
class VerifyTimings:
    """The teacher's own durations of one verification, in seconds."""

    queue_seconds: float = 0.0
    total_seconds: float = 0.0


@dataclass(frozen=True)
class VerifyResult:
    """The verdict: the draft's first `accepted_chars` characters stand, then `correction_text` (the teacher's);
    `ended` when the answer ends there (finish reason "stop"), else the answer goes on ("length")."""

    accepted_chars: int
    correction_text: str
    ended: bool
    tokens: tuple[ScoredToken, ...]
    usage: VerifyUsage
    timings: VerifyTimings = field(default_factory=VerifyTimings)

    @property
    def finish_reason(self) -> FinishReason:
        return "stop" if self.ended else "length"

    @property
    def accepted_tokens(self) -> int:
        return sum(token.accepted for token in self.tokens)
