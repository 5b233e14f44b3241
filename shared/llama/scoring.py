"""What the student thinks of a token: its log-probability, whether it was its own top choice, and how unsure it was."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TokenScore:
    """The student's view of one token of appended text (e.g. guidance), from the logits before it."""

    position: int  # the token's position in the sequence
    logprob: float  # natural log-probability the student gave it (0 = certain)
    top1: bool  # it was the student's own first choice
    # The model's top choices there, (token, log-probability), best first, when asked for (a teacher verifying a
    # draft needs its own choice at the first token it rejects).
    top: tuple[tuple[int, float], ...] = ()


def logits_row(pointer: ctypes._Pointer[ctypes.c_float], n_vocab: int) -> Logits:
    """A copy of one row of llama.cpp's logits (the buffer is reused by the next decode)."""
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float32, copy=True)


def _log_normaliser(row: Logits) -> float:
    peak = float(row.max())
    return peak + float(np.log(np.exp(row - peak, dtype=np.float64).sum()))


def score(row: Logits, token: int, position: int, top_k: int = 0) -> TokenScore:
    """The score of `token` under the distribution `row` (the logits of the position before it), with the `top_k`
    best tokens there."""
    normaliser = _log_normaliser(row)
    top: tuple[tuple[int, float], ...] = ()
    if top_k > 0:
        best = np.argpartition(row, -top_k)[-top_k:] if top_k < len(row) else np.arange(len(row))
        ranked = sorted(best.tolist(), key=lambda t: -float(row[t]))
        top = tuple((int(t), float(row[t]) - normaliser) for t in ranked)
    return TokenScore(position, float(row[token]) - normaliser, int(row.argmax()) == token, top)


def entropy(row: Logits) -> float:
    """Entropy (nats) of the next-token distribution `row`: how unsure the student is of what comes next."""
    shifted = (row - row.max()).astype(np.float64)
    weights = np.exp(shifted)
    total = weights.sum()
    probabilities = weights / total
    return float(-(probabilities * (shifted - np.log(total))).sum())


def token_probability(row: Logits, token: int, temperature: float) -> float:
    """The probability the model gave `token` when it picked it: the softmax of `row` at `temperature` (greedy: at
    1, the model's own confidence). Top-p is not applied: for speculative verification this is the draft's `q`,
    a little low where top-p cut the tail, which only makes acceptance more cautious."""
    scaled = row.astype(np.float64) / (temperature if temperature > 0 else 1.0)
    scaled -= scaled.max()
    return float(np.exp(scaled[token]) / np.exp(scaled).sum())
