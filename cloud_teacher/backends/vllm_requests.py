"""What every vLLM request of the teacher needs: the prompt's token ids from trusted and untrusted pieces, and how
long the engine kept it queued."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.prompt_formats import PromptPiece, merge_pieces


def queued_seconds(metrics: Any) -> float:
    """How long vLLM's scheduler kept the request waiting: from queued to first scheduled (engine-core clock)."""
    if metrics is None or not getattr(metrics, "scheduled_ts", 0.0):
        return 0.0
    return max(0.0, float(metrics.scheduled_ts - metrics.queued_ts))


def encode_pieces(tokenizer: Any, pieces: Sequence[PromptPiece]) -> list[int]:
    """Token ids of a prompt in pieces with a Hugging Face tokenizer: control tokens (e.g. `<|im_start|>`) are
    parsed in the chat template's markup only, never in what users or teachers wrote."""
    ids: list[int] = list(tokenizer.encode("", add_special_tokens=True))  # BOS where the model adds one
    for text, trusted in merge_pieces(pieces):
        ids += tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not trusted)
    return ids
