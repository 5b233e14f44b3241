"""One request inside the batched llama.cpp engine, as its caller sees it: append text, pause, close the prompt,
cancel, stream the text; and how the engine thread's events reach it on the caller's event loop."""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from shared.llama.engine_types import SamplingParams, SequenceEvent, SequenceResult, SequenceState
from shared.llama.scoring import Logits, TokenScore
from shared.llama.text_stream import TextStream
from shared.prompt_formats import PromptPiece


class SequenceOwner(Protocol):
    """What a sequence asks of its engine (from the caller's thread), and where it leaves events for delivery."""

    _outbox: list[tuple[EngineSequence, SequenceEvent]]

    def _append(self, sequence: EngineSequence, text: str) -> None: ...
    def _pause(self, sequence: EngineSequence) -> None: ...
    def _draft(self, sequence: EngineSequence, max_tokens: int) -> None: ...
    def _rewrite(self, sequence: EngineSequence, drop_chars: int, text: str) -> None: ...
    def _close_prompt(self, sequence: EngineSequence, max_tokens: int | None) -> None: ...
    def _cancel(self, sequence: EngineSequence) -> None: ...


@dataclass(eq=False)
class EngineSequence:
    """One request inside the engine. Its prompt may stay open (text appended later) until `close_prompt`."""

    engine: SequenceOwner
    params: SamplingParams
    prompt: list[PromptPiece]  # trusted template markup and untrusted text (see shared/prompt_formats.py)
    prompt_open: bool
    loop: asyncio.AbstractEventLoop
    # Fields below are owned by the engine thread (guarded by the engine's lock where shared).
    state: SequenceState = SequenceState.WAITING
    slot: int = -1
    tokens: list[int] = field(default_factory=list)  # the current tokenisation of the whole prompt text
    initial_prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_initial_prompt_tokens: int = 0
    # Prompt tokens that are the sequence's own output, moved into the prompt by a pause: they are completion
    # tokens already and are never counted as prompt as well.
    own_prompt_tokens: int = 0
    n_past: int = 0  # prompt tokens already in the KV cache
    pending_text: list[str] = field(default_factory=list)
    # The text the output continues (guidance appended, or a continuation given at submission): stop sequences are
    # matched across the hand-off from it to the output.
    output_context: str = ""
    cancel_requested: bool = False
    pause_requested: bool = False
    # Drafting (see `draft`): the completion count at which generation pauses (0: none), and whether the model
    # ended the draft itself (end-of-generation or a stop sequence) instead of reaching it.
    pause_at: int = 0
    draft_ended: bool = False
    pending_drop: int = 0  # characters to drop from the end of the prompt before `pending_text` (see `rewrite`)
    completion_tokens: int = 0
    token_limit: int = 0  # generation ends at this many completion tokens (`params.max_tokens` until lowered)
    generated: list[int] = field(default_factory=list)  # tokens fed back after the prompt, in the KV cells
    pending_row: tuple[int, Logits] | None = None  # logits of the last prefilled position, before its next token
    scoring: bool = False  # scores appended text (until the first pause: bursts are not scored)
    next_token: int = -1
    sampler: ctypes.c_void_p | None = None
    text_stream: TextStream | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    admitted_at: float = 0.0
    prefill_started_at: float = 0.0
    prefill_done_at: float = 0.0
    initial_prefilled_at: float = 0.0
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    _events: asyncio.Queue[SequenceEvent] = field(default_factory=asyncio.Queue)
    result: SequenceResult | None = None
    # Updated on the caller's event loop as the engine reports them.
    scores: list[TokenScore] = field(default_factory=list)  # of appended tokens, in order
    entropies: list[float] = field(default_factory=list)  # of generated tokens, in order
    completion_count: int = 0  # tokens generated so far, as delivered
    ended: bool = False  # the last draft ended where the model would end the answer
    # The last draft's text pieces as delivered, each with the probability the model gave its tokens (their product)
    # when the sequence reports probabilities.
    draft_pieces: list[tuple[str, float]] = field(default_factory=list)
    _unreleased_probability: float = 1.0  # of tokens whose text is still held back
    progress_version: int = 0  # counts deliveries of scores and the result
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.token_limit = self.params.max_tokens

    def append_text(self, text: str) -> None:
        """Appends text to an open prompt (e.g. a guidance delta); the engine re-tokenises and prefills it."""
        if text:
            self.engine._append(self, text)

    def pause(self) -> None:
        """Asks the engine to stop generating and reopen the prompt (with the text generated so far in it) for more
        text, e.g. a burst of teacher guidance; `stream()` ends at the pause; `close_prompt` resumes generation."""
        self.engine._pause(self)

    def draft(self, max_tokens: int) -> None:
        """Closes the open prompt and generates at most `max_tokens` tokens, then pauses as `pause` does (the draft
        joins the prompt, which opens again). End-of-generation or a stop sequence pauses too, with `ended` set:
        the draft's end is for a verifier to confirm. `stream()` yields the draft and ends at the pause."""
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.ended = False
        self.draft_pieces = []
        self._unreleased_probability = 1.0
        self.engine._draft(self, max_tokens)

    def rewrite(self, drop_chars: int, text: str) -> None:
        """Drops the last `drop_chars` characters of an open prompt's appended text (e.g. the rejected end of a
        draft) and appends `text` in their place (e.g. a verifier's correction). The KV cells are kept up to the last
        token boundary the edit leaves unchanged; the rest is prefilled again as text, so the hand-off works by
        characters whatever tokenizer the verifier has."""
        if drop_chars < 0:
            raise ValueError("drop_chars must be >= 0")
        if drop_chars or text:
            self.engine._rewrite(self, drop_chars, text)

    async def progressed_past(self, version: int) -> None:
        """Returns once the engine reported progress (scores, the result) after `progress_version` was `version`."""
        while self.progress_version <= version and self.result is None:
            self._progress.clear()
            await self._progress.wait()

    def close_prompt(self, max_tokens: int | None = None) -> None:
        """Marks the prompt complete: once it is prefilled, generation starts. `max_tokens`: at most this many
        tokens more (e.g. what the answer's budget leaves after the guidance); unset, `params.max_tokens` in all."""
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.engine._close_prompt(self, max_tokens)

    def cancel(self) -> None:
        """Stops the sequence and frees its slot and KV cells (safe to call more than once, from any thread)."""
        self.engine._cancel(self)

    async def stream(self) -> AsyncIterator[str]:
        """Yields generated text deltas until the sequence ends (then `result` is set) or pauses."""
        while self.result is None:
            event = await self._events.get()
            if event.result is not None:
                self.result = event.result
            if event.text:
                yield event.text
            if event.paused:
                return

    async def wait(self) -> SequenceResult:
        """Consumes the whole stream and returns the result."""
        async for _ in self.stream():
            pass
        assert self.result is not None
        return self.result

    def _emit(self, event: SequenceEvent) -> None:
        self.engine._outbox.append((self, event))


def deliver_events(events: list[tuple[EngineSequence, SequenceEvent]]) -> None:
    """Runs on the consumer's event loop: hands one step's events to their sequences."""
    for sequence, event in events:
        sequence.scores.extend(event.scores)
        if event.entropy is not None:
            sequence.entropies.append(event.entropy)
        if event.probability is not None:
            sequence._unreleased_probability *= event.probability
        if event.text:
            sequence.draft_pieces.append((event.text, sequence._unreleased_probability))
            sequence._unreleased_probability = 1.0
        if event.paused:
            sequence.ended = event.ended
        sequence.completion_count = max(sequence.completion_count, event.completion_tokens)
        if event.text or event.result is not None or event.paused or event.entropy is not None:
            sequence._events.put_nowait(event)
        if event.result is not None or event.scores:
            sequence.progress_version += 1
            sequence._progress.set()


def sequence_result(sequence: EngineSequence, reason: str, *, error: str = "") -> SequenceResult:
    """What a finished sequence produced, with its durations."""
    now = time.monotonic()
    start = sequence.submitted_at

    def since(t: float, origin: float = start) -> float:
        return max(0.0, t - origin) if t else 0.0

    return SequenceResult(
        text=(sequence.text_stream.text if sequence.text_stream else ""),
        finish_reason=reason,
        # The prompt tokens the sequence holds in its KV cells (computed or reused): all of them once it ran,
        # fewer when it was cancelled mid-prefill (e.g. the teacher finished the answer first).
        prompt_tokens=max(0, min(sequence.n_past, len(sequence.tokens)) - sequence.own_prompt_tokens),
        completion_tokens=sequence.completion_tokens,
        queue_seconds=since(sequence.admitted_at) if sequence.admitted_at else since(now),
        prefill_seconds=since(sequence.prefill_done_at, sequence.prefill_started_at)
        if sequence.prefill_started_at
        else 0.0,
        decode_seconds=since(sequence.last_token_at, sequence.first_token_at),
        time_to_first_token_seconds=since(sequence.first_token_at),
        total_seconds=since(now),
        initial_prompt_prefilled_seconds=since(sequence.initial_prefilled_at),
        initial_prompt_tokens=sequence.initial_prompt_tokens,
        cached_prompt_tokens=sequence.cached_prompt_tokens,
        submitted_at=sequence.submitted_at,
        error=error,
        cached_initial_prompt_tokens=sequence.cached_initial_prompt_tokens,
    )
