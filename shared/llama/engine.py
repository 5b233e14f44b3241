"""A continuously batched llama.cpp engine: N sequence slots in one context, one decode step for all of them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import enum
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import llama_cpp

from shared.llama.model import LlamaModel
from shared.llama.scoring import Logits, TokenScore, entropy, logits_row, score
from shared.llama.text_stream import TextStream
from shared.prompt_formats import PromptPiece
from shared.protocol.domain import Sampling
from shared.protocol.errors import BackendError, InvalidArgumentError, NotReadyError, OverloadedError

logger = logging.getLogger(__name__)


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
    ignore_eos: bool = False  # keep going past end-of-sequence (benchmarks and layout tests)
    # Score each token of text appended to the open prompt (the student's agreement with guidance).
    score_appended: bool = False
    # Report the entropy of each generated token's distribution (the student's uncertainty while it writes).
    report_entropy: bool = False

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
    # arrives (the student keeps pace with a CPU teacher and scores every token); raise it for fast teachers.
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


class _State(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    DONE = "done"


@dataclass
class _Event:
    text: str = ""
    result: SequenceResult | None = None
    entropy: float | None = None  # of the generated token whose text this is (if the sequence reports entropy)
    completion_tokens: int = 0  # tokens generated up to this text
    paused: bool = False  # the sequence stopped generating for more prompt text (see `EngineSequence.pause`)
    # Delivered at once, not queued behind text: scores of appended tokens.
    scores: tuple[TokenScore, ...] = ()


@dataclass(eq=False)
class EngineSequence:
    """One request inside the engine. Its prompt may stay open (text appended later) until `close_prompt`."""

    engine: BatchedLlamaEngine
    params: SamplingParams
    prompt: list[PromptPiece]  # trusted template markup and untrusted text (see shared/prompt_formats.py)
    prompt_open: bool
    loop: asyncio.AbstractEventLoop
    # Fields below are owned by the engine thread (guarded by the engine's lock where shared).
    state: _State = _State.WAITING
    slot: int = -1
    tokens: list[int] = field(default_factory=list)  # the current tokenisation of the whole prompt text
    initial_prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    n_past: int = 0  # prompt tokens already in the KV cache
    pending_text: list[str] = field(default_factory=list)
    # The text the output continues (guidance appended, or a continuation given at submission): stop sequences are
    # matched across the hand-off from it to the output.
    output_context: str = ""
    cancel_requested: bool = False
    pause_requested: bool = False
    completion_tokens: int = 0
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
    _events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    result: SequenceResult | None = None
    # Updated on the caller's event loop as the engine reports them.
    scores: list[TokenScore] = field(default_factory=list)  # of appended tokens, in order
    entropies: list[float] = field(default_factory=list)  # of generated tokens, in order
    completion_count: int = 0  # tokens generated so far, as delivered
    progress_version: int = 0  # counts deliveries of scores and the result
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def append_text(self, text: str) -> None:
        """Appends text to an open prompt (e.g. a guidance delta); the engine re-tokenises and prefills it."""
        if text:
            self.engine._append(self, text)

    def pause(self) -> None:
        """Asks the engine to stop generating and reopen the prompt (with the text generated so far in it) for more
        text, e.g. a burst of teacher guidance; `stream()` ends at the pause; `close_prompt` resumes generation."""
        self.engine._pause(self)

    async def progressed_past(self, version: int) -> None:
        """Returns once the engine reported progress (scores, the result) after `progress_version` was `version`."""
        while self.progress_version <= version and self.result is None:
            self._progress.clear()
            await self._progress.wait()

    def close_prompt(self) -> None:
        """Marks the prompt complete: once it is prefilled, generation starts."""
        self.engine._close_prompt(self)

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

    def _emit(self, event: _Event) -> None:
        self.engine._outbox.append((self, event))


def _put_all(events: list[tuple[EngineSequence, _Event]]) -> None:
    for sequence, event in events:
        sequence.scores.extend(event.scores)
        if event.entropy is not None:
            sequence.entropies.append(event.entropy)
        sequence.completion_count = max(sequence.completion_count, event.completion_tokens)
        if event.text or event.result is not None or event.paused or event.entropy is not None:
            sequence._events.put_nowait(event)
        if event.result is not None or event.scores:
            sequence.progress_version += 1
            sequence._progress.set()


@dataclass(frozen=True)
class _BatchEntry:
    """One sequence's part of a decode batch."""

    sequence: EngineSequence
    index: int  # batch index of its last token (where its logits are, if any)
    n_tokens: int
    has_logits: bool
    score_rows: tuple[tuple[int, int], ...] = ()  # (batch index, position) of logits rows that score appended text


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's occupancy."""

    n_slots: int
    free_slots: int
    running: int
    waiting: int
    kv_cells_used: int  # cells held by the slots (the prefix cache's own cells are not counted)
    prefix_cache_tokens: int


class BatchedLlamaEngine:
    """Runs many sequences through one llama.cpp context on a dedicated thread.

    Each step puts into one `llama_decode` batch: one token for every sequence that is generating, plus up to
    `prefill_chunk` prompt tokens of sequences still prefilling (oldest first). A sequence that ends or is
    cancelled has its KV cells removed and its slot freed at once.
    """

    def __init__(
        self,
        config: EngineConfig,
        step_observer: Callable[[int], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._step_observer = step_observer  # told how many sequences each decode step advanced (metrics)
        self._on_failure = on_failure  # told, from the engine thread, that the engine can serve no more
        self.model = LlamaModel(config.model_path)
        self.n_ctx_per_slot = min(config.n_ctx_per_slot, self.model.n_ctx_train)
        params = llama_cpp.llama_context_default_params()
        # One extra prefill chunk of headroom so the unified cache never runs out even when fragmented.
        # The prefix cache is one more sequence id (the last) holding one prompt prefix.
        self._cache_seq = config.n_slots
        n_sequences = config.n_slots + (1 if config.prefix_cache else 0)
        params.n_ctx = n_sequences * self.n_ctx_per_slot + config.prefill_chunk
        params.n_batch = config.prefill_chunk + config.n_slots
        params.n_ubatch = config.prefill_chunk + config.n_slots
        params.n_seq_max = n_sequences
        params.kv_unified = True
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if config.flash_attention
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self.model.ptr, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch_capacity = params.n_batch
        self._batch = llama_cpp.llama_batch_init(self._batch_capacity, 0, 1)
        self._lock = threading.Condition()
        self._waiting: collections.deque[EngineSequence] = collections.deque()
        self._slots: list[EngineSequence | None] = [None] * config.n_slots
        self._closed = False
        self.failure: BaseException | None = None  # set when the engine thread died: nothing is served any more
        self._injected_failure: BaseException | None = None  # tests only: raised by the engine thread's next step
        self._held = False
        self._cache_tokens: list[int] = []  # the prompt prefix whose KV cells the cache sequence holds
        self._outbox: list[tuple[EngineSequence, _Event]] = []  # events of the current step (engine thread only)
        self._kv_cells_used = 0  # counted by the engine thread: only it may touch llama.cpp's cache
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        self._thread.start()

    # ---- public API -------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | Sequence[PromptPiece],
        params: SamplingParams,
        *,
        prompt_open: bool = False,
        appended_budget: int = 0,
        output_context: str = "",
    ) -> EngineSequence:
        """Queues a sequence; raises `QueueFullError`, `PromptTooLongError`, `ContextTooSmallError` or
        `EngineClosedError` (domain errors: callers pass them on, and the error interceptor gives each its status).

        `appended_budget`: tokens of text still to be appended to an open prompt (e.g. guidance). The prompt, that
        budget and `max_tokens` must fit in a slot's context, so a request that cannot finish is refused before any
        work instead of failing half way. `output_context`: text at the end of the prompt that the output continues
        (appended text adds to it), for stop sequences that span the hand-off.
        """
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        pieces = [(prompt, False)] if isinstance(prompt, str) else list(prompt)  # a bare string is plain text
        n_prompt = len(self.model.tokenize_pieces(pieces))
        if n_prompt >= self.n_ctx_per_slot:
            raise PromptTooLongError(f"prompt has {n_prompt} tokens; the context per slot holds {self.n_ctx_per_slot}")
        needed = n_prompt + appended_budget + params.max_tokens
        if needed > self.n_ctx_per_slot:
            raise ContextTooSmallError(
                f"the prompt's {n_prompt} tokens, up to {appended_budget} tokens of guidance and max_tokens "
                f"{params.max_tokens} need {needed} tokens; a request's context holds {self.n_ctx_per_slot}: "
                "lower max_tokens or guidance_tokens"
            )
        sequence = EngineSequence(
            engine=self,
            params=params,
            prompt=pieces,
            prompt_open=prompt_open,
            output_context=output_context,
            loop=asyncio.get_running_loop(),
        )
        with self._lock:
            if self.failure is not None:
                raise EngineFailedError(f"the student engine failed ({self.failure!r}); the server must be restarted")
            if self._closed:
                raise EngineClosedError("the engine is shutting down")
            in_system = len(self._waiting) + sum(s is not None for s in self._slots)
            if in_system >= self.config.n_slots + self.config.max_queue:
                raise QueueFullError(
                    f"all {self.config.n_slots} slots are busy and {len(self._waiting)} requests are waiting "
                    f"(queue limit {self.config.max_queue})"
                )
            self._waiting.append(sequence)
            self._lock.notify()
        return sequence

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Admits nothing new while the block runs, so sequences submitted in it enter the same decode steps."""
        with self._lock:
            self._held = True
        try:
            yield
        finally:
            with self._lock:
                self._held = False
                self._lock.notify()

    def occupancy(self) -> tuple[int, int]:
        """(running, waiting) sequences now; cheap enough for every metrics scrape."""
        with self._lock:
            return sum(seq is not None for seq in self._slots), len(self._waiting)

    def stats(self) -> EngineStats:
        """Occupancy now, with the KV cells the slots held after the engine's last step."""
        running, waiting = self.occupancy()
        with self._lock:
            return EngineStats(
                n_slots=self.config.n_slots,
                free_slots=self.config.n_slots - running,
                running=running,
                waiting=waiting,
                kv_cells_used=self._kv_cells_used,
                prefix_cache_tokens=len(self._cache_tokens),
            )

    def _fail_next_step(self, error: BaseException) -> None:
        """Tests only: makes the engine thread raise `error` at its next step, as an unexpected bug would."""
        with self._lock:
            self._injected_failure = error
            self._lock.notify()

    def close(self, join_seconds: float = 30.0) -> None:
        """Cancels everything, stops the thread and frees the context (never while the thread still runs)."""
        with self._lock:
            self._closed = True
            for sequence in [*self._waiting, *(s for s in self._slots if s is not None)]:
                sequence.cancel_requested = True
            self._lock.notify()
        self._thread.join(timeout=join_seconds)
        if self._thread.is_alive():
            # Freeing the context under a thread still inside llama.cpp would crash the process: leak it instead.
            logger.error(
                "the engine thread did not stop within %.0fs; its llama.cpp context is not freed", join_seconds
            )
            return
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self.model.close()

    # ---- called from other threads through EngineSequence ------------------------------------------------------

    def _append(self, sequence: EngineSequence, text: str) -> None:
        with self._lock:
            if sequence.prompt_open and text:
                sequence.pending_text.append(text)
                self._lock.notify()

    def _pause(self, sequence: EngineSequence) -> None:
        with self._lock:
            sequence.pause_requested = True
            self._lock.notify()

    def _close_prompt(self, sequence: EngineSequence) -> None:
        with self._lock:
            sequence.prompt_open = False
            self._lock.notify()

    def _cancel(self, sequence: EngineSequence) -> None:
        with self._lock:
            sequence.cancel_requested = True
            self._lock.notify()

    # ---- the engine thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        """The engine thread: steps until closed; any failure outside a decode ends every sequence with an error."""
        try:
            self._steps()
        except BaseException as error:
            logger.exception("the llama.cpp engine thread failed; failing every sequence and refusing new ones")
            self._fail_everything(error)

    def _fail_everything(self, error: BaseException) -> None:
        """Ends every sequence with the error, without touching llama.cpp (its state is unknown now)."""
        with self._lock:
            self.failure = error
            sequences = [*self._waiting, *(s for s in self._slots if s is not None)]
            self._waiting.clear()
            self._slots = [None] * self.config.n_slots
        for sequence in sequences:
            if sequence.state is not _State.DONE:
                sequence.state = _State.DONE
                sequence._emit(_Event(result=self._result(sequence, "error", error=f"the engine failed: {error!r}")))
        self._deliver()
        if self._on_failure is not None:
            self._on_failure(error)

    def _steps(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._has_work() and self._injected_failure is None:
                    self._lock.wait()
                if self._injected_failure is not None:
                    raise self._injected_failure
                if self._closed:
                    self._finish_all_cancelled()
                    self._deliver()
                    return
                self._handle_cancellations()
                self._admit_waiting()
                self._apply_appended_text()
            entries = self._build_batch()
            if entries:
                try:
                    self._decode(entries)
                except Exception as error:  # a failed decode ends the sequences in it, never the engine
                    logger.exception("llama_decode failed")
                    for entry in entries:
                        self._finish(entry.sequence, "error", error=str(error))
            self._count_kv_cells()  # before delivering, so a caller woken by a result sees the freed cells
            self._deliver()

    def _count_kv_cells(self) -> None:
        """Cells each slot holds, from its highest cached position (the prefix cache's own are not counted)."""
        used = sum(llama_cpp.llama_memory_seq_pos_max(self._memory, slot) + 1 for slot in range(self.config.n_slots))
        with self._lock:
            self._kv_cells_used = used

    def _deliver(self) -> None:
        """Hands this step's events to their event loops: one wake-up per loop per step, not one per token.

        Waking the serving loop for every token of every sequence costs CPU the decode threads need.
        """
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EngineSequence, _Event]]] = {}
        for sequence, event in self._outbox:
            by_loop.setdefault(sequence.loop, []).append((sequence, event))
        self._outbox.clear()
        for loop, events in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(_put_all, events)

    def _has_work(self) -> bool:
        if any(s.cancel_requested for s in itertools.chain(self._waiting, filter(None, self._slots))):
            return True
        if self._waiting and None in self._slots and not self._held:
            return True
        for sequence in filter(None, self._slots):
            if sequence.state is _State.DECODE or sequence.pending_text:
                return True
            if sequence.state is not _State.PREFILL:
                continue
            prompt_complete = not sequence.prompt_open
            if prompt_complete and sequence.n_past >= len(sequence.tokens):
                return True  # prompt fully cached before it was closed: start generating
            # Work only if a prefill piece can be taken now: an open prompt whose appended text is less than a
            # block waits for more text without costing CPU (`_build_batch` would take nothing).
            available = self._prefill_available(sequence)
            if self._prefill_piece_end(sequence, available, prompt_complete) > sequence.n_past:
                return True
        return False

    def _handle_cancellations(self) -> None:
        for sequence in [s for s in self._waiting if s.cancel_requested]:
            self._waiting.remove(sequence)
            self._finish(sequence, "cancelled")
        for sequence in filter(None, list(self._slots)):
            if sequence.cancel_requested:
                self._finish(sequence, "cancelled")

    def _admit_waiting(self) -> None:
        while self._waiting and None in self._slots and not self._held:
            sequence = self._waiting.popleft()
            sequence.slot = self._slots.index(None)
            self._slots[sequence.slot] = sequence
            sequence.state = _State.PREFILL
            sequence.admitted_at = time.monotonic()
            sequence.tokens = self.model.tokenize_pieces(sequence.prompt)
            sequence.initial_prompt_tokens = len(sequence.tokens)
            self._reuse_prefix(sequence)
            sequence.sampler = self._make_sampler(sequence.params)
            sequence.scoring = sequence.params.score_appended
            sequence.text_stream = TextStream(sequence.params.stop)
            sequence.text_stream.seed(sequence.output_context)

    def _reuse_prefix(self, sequence: EngineSequence) -> None:
        """Shares with `sequence` the KV cells of the longest prompt prefix already computed (by the prefix cache or
        a running sequence), in whole prefill blocks, so the rest is prefilled in the same blocks as from scratch."""
        if not self.config.prefix_cache:
            return
        chunk = self.config.prefill_chunk
        donors = [(self._cache_seq, self._cache_tokens)]
        donors += [(s.slot, s.tokens[: min(s.n_past, len(s.tokens))]) for s in self._slots if s and s is not sequence]
        best_seq, best = -1, 0
        for seq_id, tokens in donors:
            common = 0
            limit = min(len(tokens), len(sequence.tokens) - 1)  # leave a token to prefill: it gives the logits
            while common < limit and tokens[common] == sequence.tokens[common]:
                common += 1
            if common // chunk * chunk > best:
                best_seq, best = seq_id, common // chunk * chunk
        if best:
            llama_cpp.llama_memory_seq_cp(self._memory, best_seq, sequence.slot, 0, best)
            sequence.n_past = sequence.cached_prompt_tokens = best

    def _remember_prefix(self, sequence: EngineSequence) -> None:
        """Keeps the finished sequence's prompt prefix (whole blocks) in the prefix cache, replacing the old one."""
        chunk = self.config.prefill_chunk
        length = min(sequence.n_past, len(sequence.tokens)) // chunk * chunk
        if not self.config.prefix_cache or length == 0 or self._cache_tokens == sequence.tokens[:length]:
            return
        llama_cpp.llama_memory_seq_rm(self._memory, self._cache_seq, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, sequence.slot, self._cache_seq, 0, length)
        self._cache_tokens = sequence.tokens[:length]

    def _apply_appended_text(self) -> None:
        for sequence in filter(None, self._slots):
            if not sequence.pending_text:
                continue
            appended = "".join(sequence.pending_text)
            sequence.prompt.append((appended, False))  # appended text is never trusted
            sequence.pending_text.clear()
            sequence.output_context += appended
            assert sequence.text_stream is not None
            sequence.text_stream.seed(sequence.output_context)
            tokens = self.model.tokenize_pieces(sequence.prompt)
            if len(tokens) >= self.n_ctx_per_slot:
                # More text than the admission check reserved (a teacher that wrote more than asked, or text that
                # re-tokenised longer): the answer ends here, as when it runs out of room while generating.
                self._finish(sequence, "length")
                continue
            # Text appended can re-tokenise the end of what was there: keep the common prefix, drop the rest.
            common = 0
            for old, new in zip(sequence.tokens[: sequence.n_past], tokens, strict=False):
                if old != new:
                    break
                common += 1
            if common < sequence.n_past:
                llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, common, -1)
                sequence.n_past = common
                if sequence.pending_row is not None and sequence.pending_row[0] >= common:
                    sequence.pending_row = None  # its position is prefilled again; the token after it unscored
            sequence.tokens = tokens

    @staticmethod
    def _prefill_available(sequence: EngineSequence) -> int:
        """How many prompt tokens may be prefilled now.

        While text may still be appended, the last token is held back (the next text may merge into it),
        except within the initial prompt, which is kept whole so its prefill can finish early.
        """
        if not sequence.prompt_open and not sequence.pending_text:
            return len(sequence.tokens)
        return max(min(sequence.initial_prompt_tokens, len(sequence.tokens)), len(sequence.tokens) - 1)

    def _prefill_piece_end(self, sequence: EngineSequence, available: int, prompt_complete: bool) -> int:
        """Where this step's prefill of `sequence` ends.

        Prompt tokens are decoded in blocks whose boundaries depend only on the text, never on when it arrived: the
        initial prompt in blocks of `prefill_chunk` from position 0, appended text in blocks of `append_block` from
        the end of the initial prompt. Block shapes change llama.cpp's arithmetic slightly, so fixed blocks keep a
        request's answer reproducible however its guidance was streamed. While the prompt is open only whole
        blocks of appended text are taken; once it is complete, the last short block too.
        """
        start = sequence.n_past
        origin = 0 if start < sequence.initial_prompt_tokens else sequence.initial_prompt_tokens
        chunk = self.config.prefill_chunk if origin == 0 else self.config.append_block
        boundary = origin + ((start - origin) // chunk + 1) * chunk
        if origin == 0:
            boundary = min(boundary, sequence.initial_prompt_tokens)
        if boundary <= available:
            return boundary
        if origin == 0 or (prompt_complete and available - start < chunk):
            return available  # the rest of the initial prompt, or the last (short) block of a complete prompt
        return start  # an incomplete block of appended text: wait for more text or the end of the prompt

    def _build_batch(self) -> list[_BatchEntry]:
        """Fills the llama batch; returns what each sequence in it contributed."""
        batch = self._batch
        batch.n_tokens = 0
        entries: list[_BatchEntry] = []

        def add(sequence: EngineSequence, token: int, pos: int, logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence.slot
            batch.logits[i] = logits
            batch.n_tokens = i + 1

        with self._lock:
            active = sorted(filter(None, self._slots), key=lambda s: s.admitted_at)
        for sequence in active:
            if sequence.state is _State.DECODE and sequence.pause_requested:
                self._reopen(sequence)
            elif sequence.state is _State.DECODE:
                add(sequence, sequence.next_token, sequence.n_past, True)
                sequence.generated.append(sequence.next_token)
                entries.append(_BatchEntry(sequence, batch.n_tokens - 1, 1, True))
        budget = self.config.prefill_chunk
        for sequence in active:
            if sequence.state is not _State.PREFILL or budget <= 0:
                continue
            with self._lock:
                prompt_complete = not sequence.prompt_open and not sequence.pending_text
                available = self._prefill_available(sequence)
            if prompt_complete and sequence.n_past >= len(sequence.tokens):
                # Everything is cached already (the prompt closed after its last token was prefilled):
                # re-decode the last token to get fresh logits for the first sample.
                llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, len(sequence.tokens) - 1, -1)
                sequence.n_past = len(sequence.tokens) - 1
            end = self._prefill_piece_end(sequence, available, prompt_complete)
            take = end - sequence.n_past
            if take <= 0 or (take > budget and budget < self.config.prefill_chunk):
                continue
            if not sequence.prefill_started_at:
                sequence.prefill_started_at = time.monotonic()
            last_of_prompt = prompt_complete and end == len(sequence.tokens)
            # Scoring appended text needs the logits before each of its tokens, from the initial prompt's last.
            scored_from = sequence.initial_prompt_tokens - 1 if sequence.scoring else len(sequence.tokens)
            rows: list[tuple[int, int]] = []
            for pos in range(sequence.n_past, end):
                scored = pos >= scored_from
                add(sequence, sequence.tokens[pos], pos, scored or (last_of_prompt and pos == end - 1))
                if scored:
                    rows.append((batch.n_tokens - 1, pos))
            entries.append(_BatchEntry(sequence, batch.n_tokens - 1, take, last_of_prompt, tuple(rows)))
            budget -= take
        return entries

    def _decode(self, entries: list[_BatchEntry]) -> None:
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        now = time.monotonic()
        if self._step_observer is not None:
            self._step_observer(len(entries))
        for entry in entries:
            sequence = entry.sequence
            if entry.score_rows:
                self._score(sequence, entry)
            sequence.n_past += entry.n_tokens
            if sequence.state is _State.PREFILL:
                if not sequence.initial_prefilled_at and sequence.n_past >= sequence.initial_prompt_tokens:
                    sequence.initial_prefilled_at = now
                if not entry.has_logits:
                    continue
                sequence.prefill_done_at = now
                sequence.state = _State.DECODE
            self._sample(sequence, entry.index, now)

    def _score(self, sequence: EngineSequence, entry: _BatchEntry) -> None:
        """Scores the appended tokens this piece prefilled, from the logits before each (called before `n_past`
        moves on): the first from the row kept from the previous step, the others from this step's rows."""
        start, end = sequence.n_past, sequence.n_past + entry.n_tokens
        scores: list[TokenScore] = []
        held = sequence.pending_row
        if held is not None and held[0] == start - 1 and start >= sequence.initial_prompt_tokens:
            scores.append(score(held[1], sequence.tokens[start], start))
        sequence.pending_row = None
        for index, pos in entry.score_rows:
            row = logits_row(llama_cpp.llama_get_logits_ith(self._ctx, index), self.model.n_vocab)
            if pos + 1 < end:
                if pos + 1 >= sequence.initial_prompt_tokens:
                    scores.append(score(row, sequence.tokens[pos + 1], pos + 1))
            else:
                sequence.pending_row = (pos, row)  # its next token is not prefilled yet
        if scores:
            sequence._emit(_Event(scores=tuple(scores)))

    def _reopen(self, sequence: EngineSequence) -> None:
        """Pauses a generating sequence: the text it wrote joins its prompt (its KV cells kept where the tokens
        agree), the prompt opens for more text (e.g. a teacher's burst), and `close_prompt` resumes generation."""
        assert sequence.text_stream is not None
        held_back = sequence.text_stream.flush()
        written = sequence.text_stream.text
        in_cache = [*sequence.tokens, *sequence.generated][: sequence.n_past]
        old_prompt_tokens = len(sequence.tokens)
        sequence.prompt.append((written, False))  # the student's own text: plain text, like everything appended
        tokens = self.model.tokenize_pieces(sequence.prompt)
        common = 0
        for old, new in zip(in_cache, tokens, strict=False):
            if old != new:
                break
            common += 1
        llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, common, -1)
        # Tokens it wrote and keeps in the cache count as reused prompt, not as prompt computed again.
        sequence.cached_prompt_tokens += max(0, common - old_prompt_tokens)
        sequence.n_past, sequence.tokens, sequence.generated = common, tokens, []
        sequence.output_context = written
        sequence.text_stream = TextStream(sequence.params.stop)
        sequence.text_stream.seed(written)
        sequence.scoring, sequence.pending_row = False, None
        with self._lock:
            sequence.pause_requested = False
            sequence.prompt_open = True
            sequence.state = _State.PREFILL
        sequence._emit(_Event(text=held_back, paused=True))

    def _sample(self, sequence: EngineSequence, index: int, now: float) -> None:
        if sequence.params.report_entropy:
            uncertainty: float | None = entropy(
                logits_row(llama_cpp.llama_get_logits_ith(self._ctx, index), self.model.n_vocab)
            )
        else:
            uncertainty = None
        token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, index)
        sequence.completion_tokens += 1
        if not sequence.first_token_at:
            sequence.first_token_at = now
        sequence.last_token_at = now
        assert sequence.text_stream is not None
        if self.model.is_end_of_generation(token) and not sequence.params.ignore_eos:
            if uncertainty is not None:
                sequence._emit(_Event(entropy=uncertainty))
            self._finish(sequence, "stop")
            return
        delta = sequence.text_stream.push(self.model.token_bytes(token))
        if delta or uncertainty is not None:
            sequence._emit(_Event(text=delta, entropy=uncertainty, completion_tokens=sequence.completion_tokens))
        if sequence.text_stream.stopped:
            self._finish(sequence, "stop")
        elif sequence.completion_tokens >= sequence.params.max_tokens or sequence.n_past + 1 >= self.n_ctx_per_slot:
            self._finish(sequence, "length")
        else:
            sequence.next_token = token

    def _make_sampler(self, params: SamplingParams) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return cast(ctypes.c_void_p, chain)

    def _finish(self, sequence: EngineSequence, reason: str, *, error: str = "") -> None:
        """Ends a sequence: frees its slot, KV cells and sampler, and hands the result to its consumer."""
        if sequence.state is _State.DONE:
            return
        if sequence.slot >= 0:
            if reason != "error":
                self._remember_prefix(sequence)
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, -1, -1)
            with self._lock:
                self._slots[sequence.slot] = None
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None
        sequence.state = _State.DONE
        tail = sequence.text_stream.flush() if sequence.text_stream and reason != "cancelled" else ""
        sequence._emit(_Event(text=tail, result=self._result(sequence, reason, error=error)))

    @staticmethod
    def _result(sequence: EngineSequence, reason: str, *, error: str = "") -> SequenceResult:
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
            prompt_tokens=min(sequence.n_past, len(sequence.tokens)),
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
        )

    def _finish_all_cancelled(self) -> None:
        for sequence in [*self._waiting, *(s for s in self._slots if s is not None)]:
            self._finish(sequence, "cancelled")
        self._waiting.clear()
