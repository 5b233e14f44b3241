"""The engine's prefix cache: one prompt prefix kept in the KV cells of a sequence id of its own, and the sharing of
computed prefixes with a newly admitted sequence (engine thread only)."""

from __future__ import annotations

from collections.abc import Iterable

import llama_cpp

from shared.llama.sequence import EngineSequence


class PrefixCache:
    """Reuses the KV cells of a prompt prefix already computed (e.g. a shared few-shot prefix), in whole prefill
    blocks; off (`enabled` False), every prompt is computed from scratch."""

    def __init__(self, memory: llama_cpp.llama_memory_t | None, seq_id: int, chunk: int, *, enabled: bool) -> None:
        self._memory = memory
        self.seq_id = seq_id  # the sequence id whose KV cells hold the cached prefix
        self._chunk = chunk
        self._enabled = enabled
        self.tokens: list[int] = []  # the prompt prefix whose KV cells the cache sequence holds

    def reuse(self, sequence: EngineSequence, slots: Iterable[EngineSequence | None]) -> None:
        """Shares with `sequence` the KV cells of the longest prompt prefix already computed (by the prefix cache or
        a running sequence), in whole prefill blocks, so the rest is prefilled in the same blocks as from scratch."""
        if not self._enabled:
            return
        chunk = self._chunk
        donors = [(self.seq_id, self.tokens)]
        donors += [(s.slot, s.tokens[: min(s.n_past, len(s.tokens))]) for s in slots if s and s is not sequence]
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
            sequence.n_past = sequence.cached_prompt_tokens = sequence.cached_initial_prompt_tokens = best

    def remember(self, sequence: EngineSequence) -> None:
        """Keeps the finished sequence's prompt prefix (whole blocks) in the prefix cache, replacing the old one."""
        chunk = self._chunk
        length = min(sequence.n_past, len(sequence.tokens)) // chunk * chunk
        if not self._enabled or length == 0 or self.tokens == sequence.tokens[:length]:
            return
        llama_cpp.llama_memory_seq_rm(self._memory, self.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, sequence.slot, self.seq_id, 0, length)
        self.tokens = sequence.tokens[:length]
