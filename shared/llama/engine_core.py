"""What the rooms of the batched llama.cpp engine share: the state the scheduler (`engine.py`) and its steps
(`appending.py`, `sampling.py`) work on, and one sequence's part of a decode batch."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import llama_cpp

from shared.llama.engine_types import EngineConfig
from shared.llama.model import LlamaModel
from shared.llama.sequence import EngineSequence


@dataclass(frozen=True)
class BatchEntry:
    """One sequence's part of a decode batch."""

    sequence: EngineSequence
    index: int  # batch index of its last token (where its logits are, if any)
    n_tokens: int
    has_logits: bool
    score_rows: tuple[tuple[int, int], ...] = ()  # (batch index, position) of logits rows that score appended text


class EngineCore:
    """The engine's state, declared once for its rooms: the engine thread owns it; `_lock` guards what other threads
    touch (the waiting queue, the slots, a sequence's requests)."""

    config: EngineConfig
    model: LlamaModel
    n_ctx_per_slot: int
    _ctx: llama_cpp.llama_context_p | None
    _memory: llama_cpp.llama_memory_t | None
    _lock: threading.Condition
    _slots: list[EngineSequence | None]

    def _finish(self, sequence: EngineSequence, reason: str, *, error: str = "") -> None:
        """Ends a sequence (the scheduler's: see `BatchedLlamaEngine._finish`)."""
        raise NotImplementedError
