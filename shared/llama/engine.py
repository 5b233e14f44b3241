"""A continuously batched llama.cpp engine: N sequence slots in one context, one decode step for all of them.

This file is the scheduler: the public API, the engine thread's loop, admission, the prefill blocks, the batch and
its decode, and a sequence's end. Its rooms: `engine_types` (errors, parameters, results), `sequence` (a request as
its caller sees it), `prefix_cache`, `appending` (appended text, its scores, reopening, truncation) and `sampling`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

import llama_cpp

from shared.llama.appending import AppendStep
from shared.llama.engine_core import BatchEntry
from shared.llama.engine_types import (
    ContextTooSmallError,
    EngineClosedError,
    EngineConfig,
    EngineFailedError,
    EngineStats,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
    SequenceEvent,
    SequenceResult,
    SequenceState,
)
from shared.llama.model import LlamaModel
from shared.llama.prefix_cache import PrefixCache
from shared.llama.sampling import SamplingStep, make_sampler
from shared.llama.sequence import EngineSequence, deliver_events, sequence_result
from shared.llama.text_stream import TextStream
from shared.prompt_formats import PromptPiece

__all__ = [
    "BatchedLlamaEngine",
    "ContextTooSmallError",
    "EngineClosedError",
    "EngineConfig",
    "EngineFailedError",
    "EngineSequence",
    "EngineStats",
    "PromptTooLongError",
    "QueueFullError",
    "SamplingParams",
    "SequenceResult",
]

logger = logging.getLogger(__name__)


class BatchedLlamaEngine(AppendStep, SamplingStep):
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
        self._prefix_cache = PrefixCache(
            self._memory, self._cache_seq, config.prefill_chunk, enabled=config.prefix_cache
        )
        self._outbox: list[tuple[EngineSequence, SequenceEvent]] = []  # events of the current step (engine thread only)
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
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> EngineSequence:
        """Queues a sequence; raises `QueueFullError`, `PromptTooLongError`, `ContextTooSmallError` or
        `EngineClosedError` (domain errors: callers pass them on, and the error interceptor gives each its status).

        `appended_budget`: tokens of text still to be appended to an open prompt (e.g. guidance). The prompt, that
        budget and `max_tokens` must fit in a slot's context, so a request that cannot finish is refused before any
        work instead of failing half way. `output_context`: text at the end of the prompt that the output continues
        (appended text adds to it), for stop sequences that span the hand-off. `loop`: the event loop the sequence's
        events go to (default: the running one; give it when submitting from a worker thread).
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
                f"the prompt's {n_prompt} tokens, max_tokens {params.max_tokens} and {appended_budget} tokens of room "
                f"for appended text need {needed} tokens; a request's context holds {self.n_ctx_per_slot}: "
                "lower max_tokens (it includes any guidance) or shorten the prompt"
            )
        sequence = EngineSequence(
            engine=self,
            params=params,
            prompt=pieces,
            prompt_open=prompt_open,
            output_context=output_context,
            loop=loop or asyncio.get_running_loop(),
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
                prefix_cache_tokens=len(self._prefix_cache.tokens),
            )

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

    def _draft(self, sequence: EngineSequence, max_tokens: int) -> None:
        with self._lock:
            sequence.pause_at = sequence.completion_tokens + max_tokens
            # A pause waits for a character's last byte: room for those tokens beyond the draft.
            sequence.token_limit = sequence.pause_at + 8
            sequence.draft_ended = False
            sequence.prompt_open = False
            self._lock.notify()

    def _rewrite(self, sequence: EngineSequence, drop_chars: int, text: str) -> None:
        with self._lock:
            if sequence.prompt_open:
                if sequence.pending_text:  # text not yet applied is dropped first
                    pending = "".join(sequence.pending_text)
                    kept = pending[: max(0, len(pending) - drop_chars)]
                    drop_chars -= len(pending) - len(kept)
                    sequence.pending_text = [kept] if kept else []
                sequence.pending_drop += drop_chars
                if text:
                    sequence.pending_text.append(text)
                self._lock.notify()

    def _close_prompt(self, sequence: EngineSequence, max_tokens: int | None) -> None:
        with self._lock:
            if max_tokens is not None:  # the sequence is not generating while its prompt is open: the count is still
                sequence.token_limit = sequence.completion_tokens + max_tokens
            sequence.prompt_open = False
            sequence.pause_at = 0  # generation goes on to the limit: no more drafting
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
            if sequence.state is not SequenceState.DONE:
                sequence.state = SequenceState.DONE
                sequence._emit(
                    SequenceEvent(result=sequence_result(sequence, "error", error=f"the engine failed: {error!r}"))
                )
        self._deliver()
        if self._on_failure is not None:
            self._on_failure(error)

    def _steps(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._has_work():
                    self._lock.wait()
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
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EngineSequence, SequenceEvent]]] = {}
        for sequence, event in self._outbox:
            by_loop.setdefault(sequence.loop, []).append((sequence, event))
        self._outbox.clear()
        for loop, events in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(deliver_events, events)

    def _has_work(self) -> bool:
        if any(s.cancel_requested for s in itertools.chain(self._waiting, filter(None, self._slots))):
            return True
        if self._waiting and None in self._slots:
            return True
        for sequence in filter(None, self._slots):
            if sequence.state is SequenceState.DECODE or sequence.pending_text or sequence.pending_drop:
                return True
            if sequence.state is not SequenceState.PREFILL:
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
        while self._waiting and None in self._slots:
            sequence = self._waiting.popleft()
            sequence.slot = self._slots.index(None)
            self._slots[sequence.slot] = sequence
            sequence.state = SequenceState.PREFILL
            sequence.admitted_at = time.monotonic()
            sequence.tokens = self.model.tokenize_pieces(sequence.prompt)
            sequence.initial_prompt_tokens = len(sequence.tokens)
            self._prefix_cache.reuse(sequence, self._slots)
            sequence.sampler = make_sampler(sequence.params)
            sequence.scoring = sequence.params.score_appended
            sequence.text_stream = TextStream(sequence.params.stop)
            sequence.text_stream.seed(sequence.output_context)

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

    def _build_batch(self) -> list[BatchEntry]:
        """Fills the llama batch; returns what each sequence in it contributed."""
        batch = self._batch
        batch.n_tokens = 0
        entries: list[BatchEntry] = []

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
            # A draft the model ended pauses at once: its last token (end-of-generation) is never fed.
            pausing = sequence.pause_requested and (sequence.draft_ended or not _inside_character(sequence))
            if sequence.state is SequenceState.DECODE and pausing:
                self._reopen(sequence)
            elif sequence.state is SequenceState.DECODE:
                add(sequence, sequence.next_token, sequence.n_past, True)
                sequence.generated.append(sequence.next_token)
                entries.append(BatchEntry(sequence, batch.n_tokens - 1, 1, True))
        budget = self.config.prefill_chunk
        for sequence in active:
            if sequence.state is not SequenceState.PREFILL or budget <= 0:
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
            entries.append(BatchEntry(sequence, batch.n_tokens - 1, take, last_of_prompt, tuple(rows)))
            budget -= take
        return entries

    def _decode(self, entries: list[BatchEntry]) -> None:
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
            if sequence.state is SequenceState.PREFILL:
                if not sequence.initial_prefilled_at and sequence.n_past >= sequence.initial_prompt_tokens:
                    sequence.initial_prefilled_at = now
                if not entry.has_logits:
                    continue
                sequence.prefill_done_at = now
                sequence.state = SequenceState.DECODE
            self._sample(sequence, entry.index, now)

    def _finish(self, sequence: EngineSequence, reason: str, *, error: str = "") -> None:
        """Ends a sequence: frees its slot, KV cells and sampler, and hands the result to its consumer."""
        if sequence.state is SequenceState.DONE:
            return
        if sequence.slot >= 0:
            if reason != "error":
                self._prefix_cache.remember(sequence)
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, -1, -1)
            with self._lock:
                self._slots[sequence.slot] = None
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None
        sequence.state = SequenceState.DONE
        tail = sequence.text_stream.flush() if sequence.text_stream and reason != "cancelled" else ""
        sequence._emit(SequenceEvent(text=tail, result=sequence_result(sequence, reason, error=error)))

    def _finish_all_cancelled(self) -> None:
        for sequence in [*self._waiting, *(s for s in self._slots if s is not None)]:
            self._finish(sequence, "cancelled")
        self._waiting.clear()


def _inside_character(sequence: EngineSequence) -> bool:
    """A pause waits for the rest of a character split over several byte tokens (CJK, emoji): flushing its first
    bytes would send U+FFFD to the client and into the prompt, and decode the rest as another U+FFFD."""
    return sequence.text_stream is not None and sequence.text_stream.inside_character
