"""Proto <-> domain conversion and request validation, without a server (fast; over gRPC: test_bad_input.py)."""

from __future__ import annotations

import pytest

from shared.protocol.convert import (
    answer_delta_to_pb,
    answer_to_pb,
    degraded_reason_name,
    guidance_done_from_pb,
    guidance_done_to_pb,
    guidance_request_to_pb,
    mode_from_pb,
    prompt_input_from_pb,
    sampling_from_pb,
    server_info_from_pb,
    server_info_to_pb,
)
from shared.protocol.domain import (
    Answer,
    AnswerDelta,
    ChatMessage,
    GuidanceDone,
    GuidanceParams,
    PromptInput,
    Sampling,
    ServerInfo,
    TeacherTimings,
    Timings,
    Usage,
)
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, teacher_pb2
from shared.protocol.validation import MAX_MESSAGES, validate_prompt_input, validate_sampling, validate_token_count


def test_a_guidance_request_survives_the_wire_for_both_kinds_of_input() -> None:
    for prompt_input in (
        PromptInput(prompt="Q: 2+2?\nA:", system_prompt="Be brief."),
        PromptInput(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "2+2?"))),
        PromptInput(
            messages=(ChatMessage("user", "2+2?"), ChatMessage("assistant", "It is")), continue_final_message=True
        ),
    ):
        params = GuidanceParams(prompt_input, max_tokens=7, sampling=Sampling(0.5, 0.75, 42, ("\n",)))
        wire = teacher_pb2.GuidanceRequest.FromString(guidance_request_to_pb(params).SerializeToString())
        assert wire.WhichOneof("input") == ("conversation" if prompt_input.messages else "prompt")
        assert prompt_input_from_pb(wire) == prompt_input
        assert wire.max_tokens == 7
        assert sampling_from_pb(wire.sampling, temperature=1.0, top_p=1.0) == Sampling(0.5, 0.75, 42, ("\n",))


def test_unset_sampling_fields_take_the_servers_defaults_and_no_seed_stays_unset() -> None:
    sampling = sampling_from_pb(common_pb2.Sampling(), temperature=0.3, top_p=0.8)
    assert sampling == Sampling(0.3, 0.8, None, ())
    explicit_zero = sampling_from_pb(common_pb2.Sampling(temperature=0.0, seed=0), temperature=0.3, top_p=0.8)
    assert explicit_zero.temperature == 0.0 and explicit_zero.seed == 0


def test_the_final_guidance_chunk_carries_usage_finish_and_timings() -> None:
    done = GuidanceDone(120, 30, "length", TeacherTimings(0.01, 0.2, 3.5), cached_prompt_tokens=96)
    chunk = guidance_done_to_pb(done)
    assert chunk.WhichOneof("kind") == "done"
    assert guidance_done_from_pb(chunk.done) == done


def test_answers_and_deltas_to_the_wire() -> None:
    answer = Answer(
        guidance_text="The",
        student_text=" end.",
        mode="gkt",
        finish_reason="stop",
        usage=Usage(teacher_prompt_tokens=5, teacher_completion_tokens=1, teacher_cached_prompt_tokens=2),
        timings=Timings(total_seconds=1.5),
        degraded_reason="deadline",
    )
    response = answer_to_pb(answer)
    assert (response.text, response.mode, response.finish_reason) == ("The end.", edge_pb2.MODE_GKT, 2)
    assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_DEADLINE
    assert degraded_reason_name(response.degraded_reason) == "deadline"
    assert response.usage.teacher_cached_prompt_tokens == 2 and response.timings.total_seconds == 1.5
    whole = answer_to_pb(Answer("", "x", "student_only", "length", Usage(), Timings()))
    assert not whole.degraded and degraded_reason_name(whole.degraded_reason) == ""
    chunk = answer_delta_to_pb(AnswerDelta("hi", "student"))
    assert chunk.WhichOneof("kind") == "delta" and chunk.delta.segment == edge_pb2.SEGMENT_STUDENT


def test_modes_and_server_info() -> None:
    assert mode_from_pb(edge_pb2.MODE_UNSPECIFIED) == "gkt"
    assert mode_from_pb(edge_pb2.MODE_TEACHER_ONLY) == "teacher_only"
    with pytest.raises(InvalidArgumentError, match="mode"):
        mode_from_pb(99)
    info = ServerInfo("edge", "smollm2-135m", "/x.gguf", "llamacpp", "", 1, 4, "2 cores", "0.1.0")
    assert server_info_from_pb(server_info_to_pb(info)) == info


@pytest.mark.parametrize(
    ("prompt_input", "field"),
    [
        (PromptInput(), "prompt"),
        (PromptInput(prompt="a", messages=(ChatMessage("user", "b"),)), "prompt"),
        (PromptInput(messages=(ChatMessage("robot", "b"),)), "messages[0].role"),
        (PromptInput(messages=(ChatMessage("user", ""),)), "messages[0].content"),
        (PromptInput(prompt="x" * 11), "prompt"),
        (PromptInput(messages=(ChatMessage("user", "a"),), continue_final_message=True), "continue_final_message"),
        (PromptInput(prompt="a", continue_final_message=True), "continue_final_message"),
        # Many tiny messages: each costs a template piece and a tokeniser call, whatever the characters add up to.
        (PromptInput(messages=tuple(ChatMessage("user", "a") for _ in range(MAX_MESSAGES + 1))), "messages"),
    ],
)
def test_bad_input_names_its_field(prompt_input: PromptInput, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_prompt_input(prompt_input, max_prompt_chars=10)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (Sampling(-0.1, 1.0, None), "temperature"),
        (Sampling(float("nan"), 1.0, None), "temperature"),
        (Sampling(0.0, 0.0, None), "top_p"),
        (Sampling(0.0, 1.0, None, ("",)), "stop[0]"),
        (Sampling(0.0, 1.0, None, tuple("abcdefghi")), "stop"),
    ],
)
def test_bad_sampling_names_its_field(sampling: Sampling, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_sampling(sampling)
    assert caught.value.field == field


def test_token_counts_are_bounded() -> None:
    validate_token_count("max_tokens", 5, minimum=1, maximum=5)
    with pytest.raises(InvalidArgumentError, match="max_tokens: must be between 1 and 5, got 6"):
        validate_token_count("max_tokens", 6, minimum=1, maximum=5)
