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


def logits_row(pointer: ctypes._Pointer[ctypes.c_float], n_vocab: int) -> Logits:
    """A copy of one row of llama.cpp's logits (the buffer is reused by the next decode)."""
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float32, copy=True)


def _log_softmax_at(row: Logits, token: int) -> float:
    peak = float(row.max())
    return float(row[token]) - peak - float(np.log(np.exp(row - peak, dtype=np.float64).sum()))


def score(row: Logits, token: int, position: int) -> TokenScore:
    """The score of `token` under the distribution `row` (the logits of the position before it)."""
    return TokenScore(position, _log_softmax_at(row, token), int(row.argmax()) == token)


def entropy(row: Logits) -> float:
    """Entropy (nats) of the next-token distribution `row`: how unsure the student is of what comes next."""
    shifted = (row - row.max()).astype(np.float64)
    weights = np.exp(shifted)
    total = weights.sum()
    probabilities = weights / total
    return float(-(probabilities * (shifted - np.log(total))).sum())
