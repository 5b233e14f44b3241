"""The batched llama.cpp engine's words: its errors, a sequence's sampling settings, the context's shape, what a
finished sequence produced, and the engine's own bookkeeping types (a sequence's state, its events, a batch entry)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from shared.llama.scoring import TokenScore
from shared.protocol.domain import Sampling
from shared.protocol.errors import BackendError, InvalidArgumentError, NotReadyError, OverloadedError


class QueueFullError(OverloadedError):
    """Every slot is busy and the waiting queue is at its limit (RESOURCE_EXHAUSTED)."""


class PromptTooLongError(InvalidArgumentError):
    """The prompt does not fit in one slot's context (INVALID_ARGUMENT on `prompt`)."""

    def __init__(self, problem: str) -> None:
        super().__init__("prompt", problem)


class ContextTooSmallError(InvalidArgumentError):
    """The prompt fits, but not with the text still to come and `max_tokens` (INVALID_ARGUMENT on `max_tokens`)."""

    def __init__(self, problem: str) -> None:
        super().__init__("max_tokens", problem)


class EngineClosedError(NotReadyError):
    """The engine is shutting down and takes no new sequences (UNAVAILABLE)."""


class EngineFailedError(BackendError):
    """The engine thread died: every sequence ended with an error and none are taken (UNAVAILABLE)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens and when it stops."""

    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # None = a random seed
    stop: tuple[str, ...] = ()
    # Score each token of text appended to the open prompt (e.g. the student's agreement with guidance).
    score_appended: bool = False
    score_top_k: int = 0  # with each score, the model's top choices there (a teacher verifying a draft)
    # Report the entropy of each generated token's distribution (the model's uncertainty while it writes).
    report_entropy: bool = False
    # Report the probability the model gave each token it picked (a draft's, for speculative verification).
    report_probability: bool = False

    @classmethod
    def of(cls, sampling: Sampling, max_tokens: int, format_stop: tuple[str, ...] = ()) -> SamplingParams:
        """A request's sampling settings for one sequence: the prompt format's stop sequences come first."""
        return cls(
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=format_stop + sampling.stop,
        )


@dataclass(frozen=True)
class EngineConfig:
    """Shape of the llama.cpp context behind the engine."""

    model_path: Path
    n_slots: int = 4
    n_ctx_per_slot: int = 2048
    n_threads: int = 1
    prefill_chunk: int = 128  # most prompt tokens decoded in one step, so one long prompt cannot stall the rest
    max_queue: int = 64
    # Reuse the KV cells of a prompt prefix another sequence already computed (e.g. a shared few-shot prefix).
    prefix_cache: bool = True
    # Flash attention skips the masked-out cells of other sequences in the shared KV cache (measured here:
    # +10-30 % tokens/s for SmolLM2 on 2 cores).
    flash_attention: bool = True
    # Tokens of appended text (guidance) prefilled per step, in blocks whose boundaries depend only on the text: a
    # request's answer is reproducible however its guidance streamed in. 1 prefills each guidance token as it
    # arrives (an edge keeps pace with a CPU teacher and scores every token); raise it for fast teachers.
    append_block: int = 1


@dataclass
class SequenceResult:
    """What one finished sequence produced, with durations measured by the engine (seconds)."""

    text: str
    finish_reason: str  # "length" | "stop" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    queue_seconds: float
    prefill_seconds: float
    decode_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float
    # Time from submission until the initial prompt (before any appended text) had been prefilled.
    initial_prompt_prefilled_seconds: float
    initial_prompt_tokens: int  # prompt tokens before any appended text
    cached_prompt_tokens: int  # prompt tokens whose KV cells were reused from the prefix cache (not recomputed)
    submitted_at: float  # time.monotonic() at submission, to relate the durations above to the caller's clock
    error: str = ""
    cached_initial_prompt_tokens: int = 0  # of `initial_prompt_tokens`, those reused from the prefix cache


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's occupancy."""

    n_slots: int
    free_slots: int
    running: int
    waiting: int
    kv_cells_used: int  # cells held by the slots (the prefix cache's own cells are not counted)
    prefix_cache_tokens: int


class SequenceState(enum.Enum):
    """Where a sequence is: waiting for a slot, prefilling its prompt, generating, or done."""

    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    DONE = "done"


@dataclass
class SequenceEvent:
    """What the engine thread tells a sequence's consumer after a step."""

    text: str = ""
    result: SequenceResult | None = None
    entropy: float | None = None  # of the generated token whose text this is (if the sequence reports entropy)
    completion_tokens: int = 0  # tokens generated up to this text
    paused: bool = False  # the sequence stopped generating for more prompt text (see `EngineSequence.pause`)
    ended: bool = False  # with `paused`: a draft ended where the model would end the answer (see `draft`)
    probability: float | None = None  # of the generated token whose text this is (if the sequence reports it)
    # Delivered at once, not queued behind text: scores of appended tokens.
    scores: tuple[TokenScore, ...] = ()
