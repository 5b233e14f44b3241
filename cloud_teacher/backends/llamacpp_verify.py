"""Teacher-verified drafting on the batched llama.cpp engine: the draft is appended text that the engine scores.

The prompt up to the draft's first teacher token is submitted open, the rest is appended at once and scored by the
engine's scoring path (the logits before each appended token, on the engine's prefix cache); the same sequence
generates the bonus token after the draft. A correction after a rejection is the teacher's top choice from the
scores; a longer burst is a second, short generation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from cloud_teacher.acceptance import (
    TeacherPosition,
    accepted_chars,
    decide,
    seeded_rng,
    student_probabilities,
    verdict,
)
from shared.llama.engine import BatchedLlamaEngine, SamplingParams, SequenceResult
from shared.llama.model import LlamaModel
from shared.prompt_formats import PromptFormat, PromptPiece, merge_pieces
from shared.protocol.errors import BackendError, InvalidArgumentError, NotReadyError
from shared.protocol.verification import MAX_DRAFT_TOKENS, VerifyParams, VerifyResult, VerifyTimings, VerifyUsage

# Top choices kept per scored token for the speculative rule's residual (strict and lenient need the first only).
SPECULATIVE_TOP_K = 20


@dataclass(frozen=True)
class _Layout:
    """The verification prompt in the engine's tokens: where the draft's tokens are, and their character spans."""

    head: list[PromptPiece]  # every piece before the last (untrusted) one, which ends with the draft
    tail: str
    n_tokens: int
    first: int  # position of the first token that touches the draft (straddling tokens count as draft)
    char_starts: list[int]  # where each token from `first` on starts in `tail`, in characters
    spans: list[tuple[int, int]]  # the same tokens' spans in the draft, in characters


def _layout(model: LlamaModel, pieces: Sequence[PromptPiece], draft_text: str) -> _Layout:
    merged = merge_pieces(pieces)
    tail, trusted = merged[-1]
    assert not trusted and tail.endswith(draft_text), "the draft must end the prompt's last, untrusted piece"
    n_head = len(model.tokenize_pieces(merged[:-1]))
    tail_tokens = model.tokenize(tail, add_special=False, parse_special=False)
    tail_bytes = tail.encode("utf-8")
    if b"".join(model.token_bytes(t) for t in tail_tokens) != tail_bytes:
        raise BackendError("the teacher's tokens do not spell the draft back; it cannot map them to characters")
    draft_start = len(tail) - len(draft_text)
    starts: list[int] = []
    ends: list[int] = []
    offset = 0
    for token in tail_tokens:
        starts.append(len(tail_bytes[:offset].decode("utf-8", errors="ignore")))
        offset += len(model.token_bytes(token))
        # A token ending inside a character ends after it: the character is the token's.
        ends.append(len(tail_bytes[:offset].decode("utf-8", errors="replace")))
    first = next(i for i, end in enumerate(ends) if end > draft_start)
    spans = [(max(0, s - draft_start), e - draft_start) for s, e in zip(starts[first:], ends[first:], strict=True)]
    return _Layout(merged[:-1], tail, n_head + len(tail_tokens), n_head + first, starts[first:], spans)


async def verify_on_llama(
    engine: BatchedLlamaEngine, prompt_format: PromptFormat, params: VerifyParams
) -> VerifyResult:
    """Scores the draft, applies the acceptance rule and writes the correction (see the module docstring)."""
    rendered = prompt_format.render(params.scored_input)
    layout = _layout(engine.model, rendered.pieces, params.draft_text)
    n_draft = layout.n_tokens - layout.first
    if n_draft > MAX_DRAFT_TOKENS:
        raise InvalidArgumentError("draft_text", f"is {n_draft} teacher tokens; the limit is {MAX_DRAFT_TOKENS}")
    if layout.n_tokens + params.correction_tokens > engine.n_ctx_per_slot:
        raise InvalidArgumentError(
            "draft_text",
            f"the prompt, accepted text and draft are {layout.n_tokens} teacher tokens; with "
            f"{params.correction_tokens} correction tokens they exceed a request's context ({engine.n_ctx_per_slot})",
        )
    speculative = params.acceptance.rule == "speculative"
    sampling = params.sampling
    cut = layout.char_starts[0]
    scoring = SamplingParams(
        max_tokens=1,  # the bonus token after a fully accepted draft, from the same pass
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=sampling.seed,
        score_appended=True,
        score_top_k=SPECULATIVE_TOP_K if speculative else 1,
    )
    sequence = engine.submit(
        [*layout.head, (layout.tail[:cut], False)], scoring, prompt_open=True, appended_budget=n_draft + 8
    )
    try:
        sequence.append_text(layout.tail[cut:])
        sequence.close_prompt()
        first = _checked(await sequence.wait())
    finally:
        sequence.cancel()  # no-op once finished; frees the slot if the caller went away
    by_position = {s.position: s for s in sequence.scores}
    positions: list[TeacherPosition] = []
    for offset, (start, end) in enumerate(layout.spans):
        found = by_position.get(layout.first + offset)
        if found is None:
            raise BackendError("the teacher engine did not score every draft token")
        token = sequence.tokens[layout.first + offset]
        positions.append(TeacherPosition(token, start, end, found.logprob, found.top))
    q = student_probabilities(positions, params.acceptance.draft_pieces) if speculative else []
    rng: random.Random = seeded_rng(sampling, len(params.accepted_text))
    decision = decide(positions, params.acceptance, sampling, rng, q)
    kept = accepted_chars(positions, decision, len(params.draft_text))
    prompt_tokens, cached, passes, generated = first.prompt_tokens, first.cached_prompt_tokens, 1, 0
    if decision.correction is None:  # all accepted: the pass's own generated token is the bonus
        correction, ended, generated = first.text, first.finish_reason == "stop", first.completion_tokens
    elif engine.model.is_end_of_generation(decision.correction):
        correction, ended, generated = "", True, 1
    else:
        correction = engine.model.token_bytes(decision.correction).decode("utf-8", errors="ignore")
        ended, generated = False, 1
    if not ended and generated < params.correction_tokens:
        kept_in_tail = len(layout.tail) - len(params.draft_text) + kept
        burst = engine.submit(
            [*layout.head, (layout.tail[:kept_in_tail] + correction, False)],
            SamplingParams.of(sampling, params.correction_tokens - generated),
        )
        try:
            more = _checked(await burst.wait())
        finally:
            burst.cancel()
        correction += more.text
        ended = more.finish_reason == "stop"
        generated += more.completion_tokens
        prompt_tokens += more.prompt_tokens
        cached += more.cached_prompt_tokens
        passes += 1
    return verdict(
        params,
        rendered.stop + sampling.stop,
        positions,
        decision,
        kept,
        correction,
        ended,
        VerifyUsage(prompt_tokens, cached, len(positions), generated, passes),
        VerifyTimings(queue_seconds=first.queue_seconds),
    )


def _checked(result: SequenceResult) -> SequenceResult:
    if result.finish_reason == "error":
        raise BackendError(f"the teacher engine failed: {result.error}")
    if result.finish_reason == "cancelled":
        raise NotReadyError("the teacher is shutting down")
    return result
