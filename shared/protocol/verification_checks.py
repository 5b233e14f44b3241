"""Checks of a `Verify` request; each failure names the field that is wrong (INVALID_ARGUMENT)."""

from __future__ import annotations

import math

from shared.protocol.errors import InvalidArgumentError
from shared.protocol.verification import MAX_CORRECTION_TOKENS, MAX_DRAFT_CHARS, VerifyParams


def validate_verify_params(params: VerifyParams, *, max_prompt_chars: int) -> None:
    """A draft of 1 to `MAX_DRAFT_CHARS` characters, a correction of 1 to `MAX_CORRECTION_TOKENS` tokens, the input
    with the answer so far within `max_prompt_chars`, and the acceptance rule's own parameters.

    The input and sampling settings are checked as for guidance (`validate_prompt_input`, `validate_sampling`).
    """
    if not params.draft_text:
        raise InvalidArgumentError("draft_text", "is empty: give the student's draft to verify")
    if len(params.draft_text) > MAX_DRAFT_CHARS:
        raise InvalidArgumentError(
            "draft_text", f"is {len(params.draft_text)} characters long; the limit is {MAX_DRAFT_CHARS}"
        )
    if not 1 <= params.correction_tokens <= MAX_CORRECTION_TOKENS:
        raise InvalidArgumentError(
            "correction_tokens", f"must be between 1 and {MAX_CORRECTION_TOKENS}, got {params.correction_tokens}"
        )
    prompt_input = params.input
    total = (
        len(prompt_input.prompt)
        + len(prompt_input.system_prompt)
        + sum(len(message.content) for message in prompt_input.messages)
        + len(params.accepted_text)
        + len(params.draft_text)
    )
    if total > max_prompt_chars:
        raise InvalidArgumentError(
            "accepted_text",
            f"the input, accepted text and draft are {total} characters long; the limit is {max_prompt_chars}",
        )
    acceptance = params.acceptance
    if acceptance.rule == "min_teacher_prob":
        tau = acceptance.min_teacher_prob
        if not 0.0 < tau <= 1.0:  # also rejects NaN
            raise InvalidArgumentError("acceptance.min_teacher_prob", f"must be in (0, 1], got {tau}")
    if acceptance.rule == "speculative":
        _validate_pieces(params)


def _validate_pieces(params: VerifyParams) -> None:
    """The student's pieces tile the draft in order, each with a probability in (0, 1]."""
    pieces = params.acceptance.draft_pieces
    if not pieces:
        raise InvalidArgumentError(
            "acceptance.draft_pieces", "speculative acceptance needs the student's draft tokens and probabilities"
        )
    position = 0
    for index, piece in enumerate(pieces):
        name = f"acceptance.draft_pieces[{index}]"
        if piece.start != position or piece.end <= piece.start:
            raise InvalidArgumentError(
                name, f"spans [{piece.start}, {piece.end}); pieces must tile draft_text in order from {position}"
            )
        if not (0.0 < piece.probability <= 1.0) or math.isnan(piece.probability):
            raise InvalidArgumentError(f"{name}.probability", f"must be in (0, 1], got {piece.probability}")
        position = piece.end
    if position != len(params.draft_text):
        raise InvalidArgumentError(
            "acceptance.draft_pieces", f"end at character {position}; draft_text has {len(params.draft_text)}"
        )
