"""The Verify RPC's messages: proto <-> dataclasses and request validation, without a server (fast)."""

from __future__ import annotations

import math

import pytest

from shared.protocol.domain import ChatMessage, PromptInput, Sampling
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2
from shared.protocol.verification import (
    MAX_CORRECTION_TOKENS,
    MAX_DRAFT_CHARS,
    Acceptance,
    DraftPiece,
    ScoredToken,
    VerifyParams,
    VerifyResult,
    VerifyTimings,
    VerifyUsage,
)
from shared.protocol.verification_convert import (
    verify_params_from_pb,
    verify_params_to_pb,
    verify_result_from_pb,
    verify_result_to_pb,
)
from shared.server.settings_base import TierSettings

SETTINGS = TierSettings(max_prompt_chars=1000)


def params(**overrides: object) -> VerifyParams:
    values: dict[str, object] = {
        "input": PromptInput(prompt="Q: 2+2?\nA:"),
        "accepted_text": " 2+2",
        "draft_text": " = 4.",
        "sampling": Sampling(temperature=0.0, top_p=1.0, seed=3, stop=("\nQ:",)),
    }
    values.update(overrides)
    return VerifyParams(**values)  # type: ignore[arg-type]


def test_a_verify_request_survives_the_wire_for_every_rule_and_kind_of_input() -> None:
    chat = PromptInput(messages=(ChatMessage("user", "2+2?"),), system_prompt="Be brief.")
    for acceptance in (
        Acceptance(),
        Acceptance("min_teacher_prob", 0.25),
        Acceptance("speculative", draft_pieces=(DraftPiece(0, 2, 0.5), DraftPiece(2, 5, 0.25))),
    ):
        for prompt_input in (PromptInput(prompt="Q: 2+2?\nA:"), chat):
            sent = params(input=prompt_input, acceptance=acceptance, correction_tokens=3)
            assert verify_params_from_pb(verify_params_to_pb(sent), SETTINGS) == sent


def test_unset_fields_take_the_defaults_strict_and_one_correction_token() -> None:
    decoded = verify_params_from_pb(teacher_pb2.VerifyRequest(prompt="p", draft_text="d"), SETTINGS)
    assert decoded.acceptance == Acceptance("strict")
    assert decoded.correction_tokens == 1
    assert decoded.accepted_text == ""
    assert decoded.scored_input == PromptInput(prompt="pd")


def test_the_scored_input_prefills_the_assistant_turn_for_chat() -> None:
    chat = PromptInput(messages=(ChatMessage("user", "2+2?"),))
    assert params(input=chat).scored_input.messages[-1] == ChatMessage("assistant", " 2+2 = 4.")
    assert params(input=chat).scored_input.continue_final_message


def test_a_verdict_survives_the_wire() -> None:
    result = VerifyResult(
        accepted_chars=3,
        correction_text=" five",
        ended=False,
        tokens=(ScoredToken(0, 3, -0.25, True, True), ScoredToken(3, 5, -math.inf, False, False)),
        usage=VerifyUsage(1100, 1088, 2, 1, 1),
        timings=VerifyTimings(0.01, 0.5),
    )
    message = verify_result_to_pb(result)
    assert message.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert verify_result_from_pb(message) == result
    ended = VerifyResult(0, "", True, (), VerifyUsage())
    assert verify_result_to_pb(ended).finish_reason == common_pb2.FINISH_REASON_STOP
    assert verify_result_from_pb(verify_result_to_pb(ended)).finish_reason == "stop"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"draft_text": ""}, "draft_text"),
        ({"draft_text": "x" * (MAX_DRAFT_CHARS + 1)}, "draft_text"),
        ({"correction_tokens": MAX_CORRECTION_TOKENS + 1}, "correction_tokens"),
        ({"correction_tokens": -1}, "correction_tokens"),
        ({"accepted_text": "x" * 990}, "accepted_text"),
        ({"acceptance": Acceptance("min_teacher_prob", 0.0)}, "acceptance.min_teacher_prob"),
        ({"acceptance": Acceptance("min_teacher_prob", 1.5)}, "acceptance.min_teacher_prob"),
        ({"acceptance": Acceptance("min_teacher_prob", math.nan)}, "acceptance.min_teacher_prob"),
        ({"acceptance": Acceptance("speculative")}, "acceptance.draft_pieces"),
        ({"acceptance": Acceptance("speculative", draft_pieces=(DraftPiece(0, 3, 0.5),))}, "acceptance.draft_pieces"),
        (
            {"acceptance": Acceptance("speculative", draft_pieces=(DraftPiece(0, 2, 0.5), DraftPiece(3, 5, 0.5)))},
            "acceptance.draft_pieces[1]",
        ),
        (
            {"acceptance": Acceptance("speculative", draft_pieces=(DraftPiece(0, 5, 0.0),))},
            "acceptance.draft_pieces[0].probability",
        ),
    ],
)
def test_bad_requests_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        verify_params_from_pb(verify_params_to_pb(params(**overrides)), SETTINGS)
    assert caught.value.field == field


def test_an_unknown_rule_and_a_bad_input_name_their_fields() -> None:
    request = verify_params_to_pb(params())
    request.acceptance.rule = 42  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError) as caught:
        verify_params_from_pb(request, SETTINGS)
    assert caught.value.field == "acceptance.rule"
    with pytest.raises(InvalidArgumentError) as caught:
        verify_params_from_pb(teacher_pb2.VerifyRequest(draft_text="d"), SETTINGS)
    assert caught.value.field == "prompt"
