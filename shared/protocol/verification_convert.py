"""Protobuf <-> the `Verify` RPC's dataclasses (shared/protocol/verification.py), at the servicers and clients."""

from __future__ import annotations

from shared.protocol.convert import RequestDefaults, input_and_sampling_from_pb, input_to_pb, sampling_to_pb
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2
from shared.protocol.verification import (
    Acceptance,
    AcceptanceRule,
    DraftPiece,
    ScoredToken,
    VerifyParams,
    VerifyResult,
    VerifyTimings,
    VerifyUsage,
)
from shared.protocol.verification_checks import validate_verify_params

_RULE_FROM_PB: dict[int, AcceptanceRule] = {
    teacher_pb2.Acceptance.RULE_UNSPECIFIED: "strict",
    teacher_pb2.Acceptance.RULE_STRICT: "strict",
    teacher_pb2.Acceptance.RULE_MIN_TEACHER_PROB: "min_teacher_prob",
    teacher_pb2.Acceptance.RULE_SPECULATIVE: "speculative",
}
_RULE_TO_PB = {
    "strict": teacher_pb2.Acceptance.RULE_STRICT,
    "min_teacher_prob": teacher_pb2.Acceptance.RULE_MIN_TEACHER_PROB,
    "speculative": teacher_pb2.Acceptance.RULE_SPECULATIVE,
}


def acceptance_from_pb(message: teacher_pb2.Acceptance) -> Acceptance:
    try:
        rule = _RULE_FROM_PB[message.rule]
    except KeyError:
        raise InvalidArgumentError(
            "acceptance.rule", f"unknown rule {message.rule}; use STRICT, MIN_TEACHER_PROB or SPECULATIVE"
        ) from None
    return Acceptance(
        rule=rule,
        min_teacher_prob=message.min_teacher_prob,
        draft_pieces=tuple(DraftPiece(p.start, p.end, p.probability) for p in message.draft_pieces),
    )


def verify_params_from_pb(request: teacher_pb2.VerifyRequest, settings: RequestDefaults) -> VerifyParams:
    """Decodes a request, fills in the teacher's defaults and validates it (`InvalidArgumentError` names the field).

    `correction_tokens` 0 (unset) means 1: the teacher's own top token at the first rejected position.
    """
    prompt_input, sampling = input_and_sampling_from_pb(request, settings)
    params = VerifyParams(
        input=prompt_input,
        accepted_text=request.accepted_text,
        draft_text=request.draft_text,
        sampling=sampling,
        acceptance=acceptance_from_pb(request.acceptance),
        correction_tokens=request.correction_tokens or 1,
    )
    validate_verify_params(params, max_prompt_chars=settings.max_prompt_chars)
    return params


def verify_params_to_pb(params: VerifyParams) -> teacher_pb2.VerifyRequest:
    acceptance = params.acceptance
    return teacher_pb2.VerifyRequest(
        **input_to_pb(params.input),  # type: ignore[arg-type]
        system_prompt=params.input.system_prompt,
        continue_final_message=params.input.continue_final_message,
        accepted_text=params.accepted_text,
        draft_text=params.draft_text,
        acceptance=teacher_pb2.Acceptance(
            rule=_RULE_TO_PB[acceptance.rule],
            min_teacher_prob=acceptance.min_teacher_prob,
            draft_pieces=[
                teacher_pb2.DraftPiece(start=p.start, end=p.end, probability=p.probability)
                for p in acceptance.draft_pieces
            ],
        ),
        correction_tokens=params.correction_tokens,
        sampling=sampling_to_pb(params.sampling),
    )


def verify_result_to_pb(result: VerifyResult) -> teacher_pb2.VerifyResponse:
    usage = result.usage
    return teacher_pb2.VerifyResponse(
        accepted_chars=result.accepted_chars,
        correction_text=result.correction_text,
        ended=result.ended,
        finish_reason=common_pb2.FINISH_REASON_STOP if result.ended else common_pb2.FINISH_REASON_LENGTH,
        tokens=[
            teacher_pb2.DraftToken(start=t.start, end=t.end, logprob=t.logprob, top1=t.top1, accepted=t.accepted)
            for t in result.tokens
        ],
        usage=teacher_pb2.VerifyUsage(
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            scored_tokens=usage.scored_tokens,
            generated_tokens=usage.generated_tokens,
            passes=usage.passes,
        ),
        timings=teacher_pb2.VerifyTimings(
            queue_seconds=result.timings.queue_seconds, total_seconds=result.timings.total_seconds
        ),
    )


def verify_result_from_pb(response: teacher_pb2.VerifyResponse) -> VerifyResult:
    usage = response.usage
    return VerifyResult(
        accepted_chars=response.accepted_chars,
        correction_text=response.correction_text,
        # Only the flag says the answer ended: an unset finish reason never cuts an answer short.
        ended=response.ended,
        tokens=tuple(ScoredToken(t.start, t.end, t.logprob, t.top1, t.accepted) for t in response.tokens),
        usage=VerifyUsage(
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            scored_tokens=usage.scored_tokens,
            generated_tokens=usage.generated_tokens,
            passes=usage.passes,
        ),
        timings=VerifyTimings(response.timings.queue_seconds, response.timings.total_seconds),
    )
