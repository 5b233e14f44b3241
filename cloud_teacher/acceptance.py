"""Teacher-verified drafting's verdict as pure logic: which draft tokens the teacher keeps, what it writes instead,
and where a stop sequence ends the answer. The backends only supply the teacher's scores."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from shared.protocol.domain import Sampling
from shared.protocol.verification import (
    Acceptance,
    DraftPiece,
    ScoredToken,
    VerifyParams,
    VerifyResult,
    VerifyTimings,
    VerifyUsage,
)


@dataclass(frozen=True)
class TeacherPosition:
    """The teacher's scores at one of its tokens of the draft (span in characters of the draft)."""

    token: int  # the drafted token, in the teacher's vocabulary
    start: int
    end: int
    logprob: float  # natural log-probability the teacher gives `token` (temperature 1)
    top: tuple[tuple[int, float], ...]  # the teacher's top choices there, (token, log-probability), best first

    @property
    def top1(self) -> bool:
        return self.token == self.top[0][0]


@dataclass(frozen=True)
class Decision:
    """How many of the draft's teacher tokens stand, and the token the teacher writes at the first rejected one
    (None when every token stands: then the teacher's next token is generated after the draft)."""

    accepted: int
    correction: int | None


def seeded_rng(sampling: Sampling, answer_offset: int) -> random.Random:
    """The random source of one verification: fixed by the request's seed and where in the answer the draft starts
    (so rounds of one answer do not reuse the same draws); fresh when the request has no seed."""
    if sampling.seed is None:
        return random.Random()
    return random.Random(f"gkt-verify:{sampling.seed}:{answer_offset}")


def decide(
    positions: Sequence[TeacherPosition],
    acceptance: Acceptance,
    sampling: Sampling,
    rng: random.Random,
    student_probabilities: Sequence[float] = (),
) -> Decision:
    """Applies the acceptance rule token by token and stops at the first rejection.

    - strict: a token stands if it is the teacher's top choice; the correction is that top choice.
    - min_teacher_prob: a token stands if the teacher gives it at least the threshold (or it is the top choice:
      the teacher would write it itself); the correction is the top choice.
    - speculative (temperature > 0; strict at 0): a token stands with probability min(1, p/q); the correction is
      sampled from the residual max(0, p - q) over the teacher's top choices (`residual`).
    """
    rule = acceptance.rule
    if rule == "speculative" and sampling.temperature <= 0.0:
        rule = "strict"
    for index, position in enumerate(positions):
        if rule == "strict":
            kept = position.top1
        elif rule == "min_teacher_prob":
            kept = position.top1 or math.exp(position.logprob) >= acceptance.min_teacher_prob
        else:
            p = teacher_distribution(position, sampling).get(position.token, 0.0)
            q = student_probabilities[index]
            kept = rng.random() < min(1.0, p / q)
        if not kept:
            if rule == "speculative":
                return Decision(index, residual(position, student_probabilities[index], sampling, rng))
            return Decision(index, position.top[0][0])
    return Decision(len(positions), None)


def teacher_distribution(position: TeacherPosition, sampling: Sampling) -> dict[int, float]:
    """The teacher's sampling distribution at a position, at the request's temperature and top_p, over the tokens it
    reported (its top choices and the drafted token): the mass beyond them is unknown and left out."""
    logprobs = dict(position.top)
    logprobs.setdefault(position.token, position.logprob)
    finite = {token: lp for token, lp in logprobs.items() if lp > -math.inf}
    if not finite:
        return {position.top[0][0]: 1.0}
    temperature = max(sampling.temperature, 1e-6)
    peak = max(finite.values())
    weights = {token: math.exp((lp - peak) / temperature) for token, lp in finite.items()}
    total = sum(weights.values())
    ranked = sorted(weights.items(), key=lambda item: -item[1])
    kept: dict[int, float] = {}
    mass = 0.0
    for token, weight in ranked:  # nucleus: the smallest set of top tokens holding top_p of the mass
        kept[token] = weight
        mass += weight / total
        if mass >= sampling.top_p:
            break
    norm = sum(kept.values())
    return {token: weight / norm for token, weight in kept.items()}


def residual(position: TeacherPosition, q: float, sampling: Sampling, rng: random.Random) -> int:
    """A token from the residual distribution max(0, p - q), normalised, after the draft token was rejected.

    Only the student's probability of the drafted token is known: its probabilities of other tokens are taken as 0,
    so the residual is the teacher's distribution with the drafted token's share lowered by q (exact when the
    student's mass sat on its draft). Falls back to the teacher's top choice when nothing is left.
    """
    p = teacher_distribution(position, sampling)
    weights = {token: max(0.0, prob - (q if token == position.token else 0.0)) for token, prob in p.items()}
    total = sum(weights.values())
    if total <= 0.0:
        return position.top[0][0]
    threshold = rng.random() * total
    for token, weight in sorted(weights.items(), key=lambda item: -item[1]):
        threshold -= weight
        if threshold < 0.0:
            return token
    return max(weights, key=lambda token: weights[token])


def student_probabilities(positions: Sequence[TeacherPosition], pieces: Sequence[DraftPiece]) -> list[float]:
    """q per teacher token: the product of the probabilities of the student's pieces that end inside it (1 when
    none does). With a shared tokenizer each teacher token is one student piece and q is exact; otherwise the
    product over the draft is still the student's probability of the whole draft."""
    result: list[float] = []
    for position in positions:
        q = 1.0
        for piece in pieces:
            if position.start < piece.end <= position.end:
                q *= piece.probability
        result.append(q)
    return result


def scored_tokens(positions: Sequence[TeacherPosition], decision: Decision) -> tuple[ScoredToken, ...]:
    """The per-token report: span, log-probability, top-1 flag, whether it stood."""
    return tuple(
        ScoredToken(p.start, p.end, p.logprob, p.top1, index < decision.accepted) for index, p in enumerate(positions)
    )


def accepted_chars(positions: Sequence[TeacherPosition], decision: Decision, draft_length: int) -> int:
    """The characters of the draft that stand: up to the start of the first rejected teacher token."""
    if decision.accepted >= len(positions):
        return draft_length
    return positions[decision.accepted].start


@dataclass(frozen=True)
class Ending:
    """The verdict's text after stop sequences: the draft's characters kept, the correction, and whether it ended."""

    accepted_chars: int
    correction_text: str
    ended: bool


def apply_stops(
    accepted_text: str, draft_text: str, kept_chars: int, correction_text: str, ended: bool, stops: Sequence[str]
) -> Ending:
    """Cuts the kept draft and the correction before the first stop sequence that ends in them (it may start in
    the accepted text, whose end the edge then drops itself); the answer ends there."""
    head = accepted_text[-max((len(stop) for stop in stops), default=1) :] if stops else ""
    new_text = draft_text[:kept_chars] + correction_text
    combined = head + new_text
    cut: int | None = None
    for stop in stops:
        found = combined.find(stop)
        while found != -1 and found + len(stop) <= len(head):  # lies wholly in the accepted text: not new
            found = combined.find(stop, found + 1)
        if found != -1 and (cut is None or found < cut):
            cut = found
    if cut is None:
        return Ending(kept_chars, correction_text, ended)
    end = max(0, cut - len(head))  # in characters of the new text
    if end <= kept_chars:
        return Ending(end, "", True)
    return Ending(kept_chars, correction_text[: end - kept_chars], True)


def verdict(
    params: VerifyParams,
    stops: Sequence[str],
    positions: Sequence[TeacherPosition],
    decision: Decision,
    kept_chars: int,
    correction_text: str,
    ended: bool,
    usage: VerifyUsage,
    timings: VerifyTimings,
) -> VerifyResult:
    """Every backend's verdict from what its passes found: stop sequences applied to the kept draft and the
    correction, and each draft token reported as standing only if it lies before the cut."""
    ending = apply_stops(params.accepted_text, params.draft_text, kept_chars, correction_text, ended, stops)
    report = tuple(
        replace(token, accepted=token.accepted and token.end <= ending.accepted_chars)
        for token in scored_tokens(positions, decision)
    )
    return VerifyResult(
        accepted_chars=ending.accepted_chars,
        correction_text=ending.correction_text,
        ended=ending.ended,
        tokens=report,
        usage=usage,
        timings=timings,
    )
