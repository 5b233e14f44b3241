"""Teacher-verified drafting on vLLM: one request scores the draft with prompt log-probs on the prefix cache.

The prompt is the rendered input with the accepted text and the draft written as the start of the answer. vLLM's
prompt log-probs come from the positions it computes: those served from cached blocks carry garbage, so the request
reports how many tokens it read from the cache (`num_cached_tokens`) and the scores are used only where computed.
When the position before the draft lies in a cached block (e.g. the same verification sent twice) the pass is run
again without reading the cache and counted as a second pass.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud_teacher.acceptance import (
    TeacherPosition,
    accepted_chars,
    decide,
    seeded_rng,
    student_probabilities,
    verdict,
)
from cloud_teacher.backends.vllm_requests import encode_pieces, queued_seconds
from shared.prompt_formats import PromptFormat, PromptPiece, merge_pieces
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.verification import MAX_DRAFT_TOKENS, VerifyParams, VerifyResult, VerifyTimings, VerifyUsage

logger = logging.getLogger(__name__)

# Top choices the speculative rule's residual is drawn from (vLLM's default `max_logprobs`).
SPECULATIVE_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class DraftTokens:
    """The verification prompt in the teacher's tokens, and where the draft's tokens are."""

    prompt_ids: list[int]
    first: int  # index in `prompt_ids` of the first token that touches the draft (straddling tokens count as draft)
    spans: list[tuple[int, int]]  # character span in the draft of each token from `first` on
    tail_start: int  # index in `prompt_ids` where the last (untrusted) piece starts: decoding starts there


def draft_tokens(tokenizer: Any, pieces: Sequence[PromptPiece], draft_text: str) -> DraftTokens:
    """Tokenises the prompt as the guidance path does (`encode_pieces`: control tokens only in trusted markup) and
    maps the tokens of its last piece, which ends with the draft, to characters of the draft."""
    merged = merge_pieces(pieces)
    tail, trusted = merged[-1]
    assert not trusted and tail.endswith(draft_text), "the draft must end the prompt's last, untrusted piece"
    head_ids = encode_pieces(tokenizer, merged[:-1])
    encoded = tokenizer(tail, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    tail_ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(pair) for pair in encoded["offset_mapping"]]
    draft_start = len(tail) - len(draft_text)
    first = next(i for i, (_, end) in enumerate(offsets) if end > draft_start)
    spans = [(max(0, start - draft_start), end - draft_start) for start, end in offsets[first:]]
    return DraftTokens(head_ids + tail_ids, len(head_ids) + first, spans, len(head_ids))


@dataclass
class _Passes:
    """What one verification's engine requests cost, summed."""

    passes: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    queue_seconds: float = 0.0


class VllmVerifier:
    """Verifies drafts on a running AsyncLLM engine (the vLLM backend owns the engine and maps its errors)."""

    def __init__(self, engine: Any, tokenizer: Any, prompt_format: PromptFormat, max_model_len: int) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._format = prompt_format
        self._max_model_len = max_model_len
        # Tokens that end the answer when the teacher picks them (its end-of-turn and end-of-text, and any other
        # control token: text cannot carry one).
        self._special = set(tokenizer.all_special_ids)

    async def verify(self, params: VerifyParams) -> VerifyResult:
        from vllm import SamplingParams

        rendered = self._format.render(params.scored_input)
        tokens = draft_tokens(self._tokenizer, rendered.pieces, params.draft_text)
        n_draft = len(tokens.prompt_ids) - tokens.first
        if n_draft > MAX_DRAFT_TOKENS:
            raise InvalidArgumentError("draft_text", f"is {n_draft} teacher tokens; the limit is {MAX_DRAFT_TOKENS}")
        if len(tokens.prompt_ids) + params.correction_tokens > self._max_model_len:
            raise InvalidArgumentError(
                "draft_text",
                f"the prompt, accepted text and draft are {len(tokens.prompt_ids)} teacher tokens; with "
                f"{params.correction_tokens} correction tokens they exceed the teacher's max model length "
                f"{self._max_model_len}",
            )
        speculative = params.acceptance.rule == "speculative"
        sampling = params.sampling
        scoring = SamplingParams(
            max_tokens=1,  # the bonus token after a fully accepted draft, computed in the same pass
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            prompt_logprobs=SPECULATIVE_TOP_LOGPROBS if speculative else 1,
            # Positions served from cache hold garbage ids that vLLM 0.32 cannot detokenize (OverflowError): the
            # text is decoded here instead.
            detokenize=False,
            skip_reading_prefix_cache=False,  # prompt log-probs otherwise recompute the whole prompt
        )
        top_k = SPECULATIVE_TOP_LOGPROBS if speculative else 1
        run = _Passes()
        output = await self._run(tokens.prompt_ids, scoring, run)
        # prompt_logprobs[i] scores token i from position i - 1's logits: valid only where i - 1 was computed.
        if output.num_cached_tokens > tokens.first - 1:
            logger.info(
                "verification: %d cached tokens cover the position before the draft (%d); scoring again uncached",
                output.num_cached_tokens,
                tokens.first - 1,
            )
            output = await self._run(tokens.prompt_ids, replace_params(scoring, skip_reading_prefix_cache=True), run)
        positions = self._positions(tokens, output.prompt_logprobs, top_k)
        q = student_probabilities(positions, params.acceptance.draft_pieces) if speculative else []
        decision = decide(positions, params.acceptance, sampling, seeded_rng(sampling, len(params.accepted_text)), q)
        kept = accepted_chars(positions, decision, len(params.draft_text))
        kept_ids = tokens.prompt_ids[: tokens.first + decision.accepted]
        completion = output.outputs[0]
        if decision.correction is None:  # all accepted: the pass's own generated token is the bonus
            written, ended = self._cut_at_special(list(completion.token_ids), completion.finish_reason == "stop")
        else:  # the teacher's choice at the first rejected position, from the same pass
            written, ended = self._cut_at_special([decision.correction], False)
        if not ended and 0 < len(written) < params.correction_tokens:
            burst = SamplingParams(
                max_tokens=params.correction_tokens - len(written),
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed,
                detokenize=False,
            )
            more = (await self._run(kept_ids + written, burst, run)).outputs[0]
            written, ended = self._cut_at_special(written + list(more.token_ids), more.finish_reason == "stop")
        correction = self._continuation(kept_ids[tokens.tail_start :], written)
        return verdict(
            params,
            rendered.stop + sampling.stop,
            positions,
            decision,
            kept,
            correction,
            ended,
            VerifyUsage(
                prompt_tokens=run.prompt_tokens,
                cached_prompt_tokens=run.cached_prompt_tokens,
                scored_tokens=len(positions),
                generated_tokens=len(written),
                passes=run.passes,
            ),
            VerifyTimings(queue_seconds=run.queue_seconds),
        )

    async def _run(self, prompt_ids: list[int], sampling: Any, run: _Passes) -> Any:
        """One engine request to its end (counted in `run`); aborted in the engine if the caller goes away."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling.output_kind = RequestOutputKind.FINAL_ONLY
        request_id = f"verify-{uuid.uuid4().hex}"
        final = None
        try:
            async for output in self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id):
                final = output
        finally:
            if final is None or not final.finished:
                await self._engine.abort(request_id)
        assert final is not None
        run.passes += 1
        run.prompt_tokens += len(prompt_ids)
        run.cached_prompt_tokens += final.num_cached_tokens or 0
        run.queue_seconds += queued_seconds(final.metrics)
        return final

    @staticmethod
    def _positions(tokens: DraftTokens, prompt_logprobs: Sequence[Any], top_k: int) -> list[TeacherPosition]:
        """The teacher's scores at each draft token: its log-probability and the top `top_k` choices there."""
        positions: list[TeacherPosition] = []
        for offset, (start, end) in enumerate(tokens.spans):
            index = tokens.first + offset
            token = tokens.prompt_ids[index]
            entry = prompt_logprobs[index]
            top = sorted((lp.rank, tid, float(lp.logprob)) for tid, lp in entry.items() if 1 <= lp.rank <= top_k)
            positions.append(
                TeacherPosition(token, start, end, float(entry[token].logprob), tuple((t, lp) for _, t, lp in top))
            )
        return positions

    def _cut_at_special(self, written: list[int], ended: bool) -> tuple[list[int], bool]:
        """Written tokens up to the first control token (end of turn or text), which ends the answer."""
        for index, token in enumerate(written):
            if token in self._special:
                return written[:index], True
        return written, ended

    def _continuation(self, before: list[int], written: list[int]) -> str:
        """The text `written` adds after `before` (decoded together, so a token that completes a character or
        joins a word renders as it would in the whole answer)."""
        if not written:
            return ""
        head = self._tokenizer.decode(before, skip_special_tokens=True)
        whole = self._tokenizer.decode(before + written, skip_special_tokens=True)
        return str(whole[len(head) :]) if whole.startswith(head) else str(self._tokenizer.decode(written))


def replace_params(sampling: Any, **changes: Any) -> Any:
    """A copy of vLLM `SamplingParams` with some fields changed (it is a msgspec struct, not a dataclass)."""
    copy = sampling.clone()
    for name, value in changes.items():
        setattr(copy, name, value)
    return copy
