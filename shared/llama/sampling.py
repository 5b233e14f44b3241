"""How the engine picks a sequence's next token: its sampler chain, and the step after each decode that samples,
streams the text and ends the sequence at end-of-generation, a stop sequence or its limits."""

from __future__ import annotations

import ctypes
from typing import cast

import llama_cpp

from shared.llama.engine_core import EngineCore
from shared.llama.engine_types import SamplingParams, SequenceEvent
from shared.llama.scoring import entropy, logits_row, token_probability
from shared.llama.sequence import EngineSequence


def make_sampler(params: SamplingParams) -> ctypes.c_void_p:
    """A llama.cpp sampler chain for one sequence: greedy at temperature 0, else top-p, temperature and a seed."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return cast(ctypes.c_void_p, chain)


class SamplingStep(EngineCore):
    """The engine's sampling step (engine thread only)."""

    def _sample(self, sequence: EngineSequence, index: int, now: float) -> None:
        """Picks the token after `index`'s logits, streams its text, and ends the sequence on a stop or its limits."""
        row = None
        if sequence.params.report_entropy or sequence.params.report_probability:
            row = logits_row(llama_cpp.llama_get_logits_ith(self._ctx, index), self.model.n_vocab)
        uncertainty = entropy(row) if row is not None and sequence.params.report_entropy else None
        token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, index)
        chance = None
        if row is not None and sequence.params.report_probability:
            chance = token_probability(row, token, sequence.params.temperature)
        sequence.completion_tokens += 1
        if not sequence.first_token_at:
            sequence.first_token_at = now
        sequence.last_token_at = now
        assert sequence.text_stream is not None
        if self.model.is_end_of_generation(token):
            if uncertainty is not None:
                sequence._emit(SequenceEvent(entropy=uncertainty))
            if sequence.pause_at:  # drafting: the end is the verifier's to confirm
                self._end_draft(sequence)
                return
            self._finish(sequence, "stop")
            return
        delta = sequence.text_stream.push(self.model.token_bytes(token))
        if delta or uncertainty is not None or chance is not None:
            sequence._emit(
                SequenceEvent(
                    text=delta,
                    entropy=uncertainty,
                    probability=chance,
                    completion_tokens=sequence.completion_tokens,
                )
            )
        if sequence.text_stream.stopped and sequence.pause_at:
            self._end_draft(sequence)
        elif sequence.text_stream.stopped:
            self._finish(sequence, "stop")
        elif sequence.pause_at and sequence.completion_tokens >= sequence.pause_at:
            with self._lock:  # the draft is long enough: the token just sampled is fed as prompt after the pause
                sequence.pause_requested = True
            sequence.next_token = token
        elif sequence.completion_tokens >= sequence.token_limit or sequence.n_past + 1 >= self.n_ctx_per_slot:
            self._finish(sequence, "length")
        else:
            sequence.next_token = token

    def _end_draft(self, sequence: EngineSequence) -> None:
        """The model ended its draft (end-of-generation or a stop sequence): pause now, the end not fed."""
        with self._lock:
            sequence.draft_ended = True
            sequence.pause_requested = True
