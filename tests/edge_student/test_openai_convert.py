"""The OpenAI facade's translation, without a model: model-name routing, the `gkt` extension, the same defaults and
validation as gRPC (the two build equal `GenerateParams`), field names as the caller spelt them, usage sums."""

from __future__ import annotations

from typing import Any

import pytest

from edge_student.openai_convert import (
    ModelRoute,
    UnknownModelError,
    chat_request,
    completion_request,
    field_name,
    route_model,
)
from edge_student.openai_convert import usage_out as usage_of
from edge_student.openai_types import ChatCompletionRequest, CompletionRequest
from edge_student.service import EdgeService
from edge_student.servicer import EdgeServicer
from edge_student.settings import EdgeSettings
from shared.metrics import GktMetrics
from shared.protocol.domain import Answer, ChatMessage, Timings, Usage
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.gkt.v1 import common_pb2, edge_pb2

SETTINGS = EdgeSettings(default_guidance_tokens=40, default_max_tokens=256, default_temperature=0.0)
HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": HI, **fields})


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("gkt", ModelRoute("gkt")),
        ("gkt-student", ModelRoute("student_only")),
        ("gkt-teacher", ModelRoute("teacher_only")),
        ("gkt@0", ModelRoute("gkt", 0)),
        ("gkt@17", ModelRoute("gkt", 17)),
    ],
)
def test_model_names_route_requests(name: str, route: ModelRoute) -> None:
    assert route_model(name) == route


@pytest.mark.parametrize("name", ["gpt-4o", "GKT", "gkt@", "gkt@-1", "gkt@x", "gkt-student@3", "gkt@1234567890"])
def test_unknown_model_names_are_refused(name: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        route_model(name)
    assert caught.value.field == "model"


def test_defaults_and_validation_are_the_grpc_ones() -> None:
    servicer = EdgeServicer(EdgeService(SETTINGS, GktMetrics("edge")))
    grpc_params = servicer.params_from_pb(
        edge_pb2.GenerateRequest(
            conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="hi")])
        )
    )
    assert chat_request(chat(), SETTINGS).params == grpc_params
    assert grpc_params.guidance_tokens == 40 and grpc_params.max_tokens == 256 and grpc_params.mode == "gkt"

    grpc_raw = servicer.params_from_pb(
        edge_pb2.GenerateRequest(
            prompt="Q: 1+1?\nA:",
            mode=edge_pb2.MODE_STUDENT_ONLY,
            max_tokens=9,
            sampling=common_pb2.Sampling(temperature=0.5, top_p=0.75, seed=4, stop=["\n"]),
        )
    )
    body = CompletionRequest.model_validate(
        {"model": "gkt-student", "prompt": "Q: 1+1?\nA:", "max_tokens": 9, "temperature": 0.5, "top_p": 0.75}
        | {"seed": 4, "stop": "\n"}
    )
    assert completion_request(body, SETTINGS).params == grpc_raw


def test_the_extension_overrides_the_model_name() -> None:
    params = chat_request(chat(model="gkt-student", gkt={"mode": "gkt", "guidance_tokens": 3}), SETTINGS).params
    assert (params.mode, params.guidance_tokens) == ("gkt", 3)
    params = chat_request(chat(model="gkt@5", gkt={"guidance_tokens": 2}), SETTINGS).params
    assert params.guidance_tokens == 2
    params = chat_request(chat(model="gkt@5", gkt={"mode": "teacher"}), SETTINGS).params
    assert (params.mode, params.guidance_tokens) == ("teacher_only", 5)


def test_request_options() -> None:
    translated = chat_request(
        chat(max_tokens=5, max_completion_tokens=7, stream=True, stream_options={"include_usage": True}), SETTINGS
    )
    assert translated.params.max_tokens == 7  # OpenAI's newer name wins
    assert chat_request(chat(model="gkt@40", max_tokens=4), SETTINGS).params.guidance_tokens == 4  # K clipped
    assert translated.stream and translated.include_usage and translated.timeout_seconds is None
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hi"},
    ]
    prefilled = chat_request(chat(messages=messages, continue_final_message=True), SETTINGS).params.input
    assert prefilled.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hello, there"),
        ChatMessage("assistant", "Hi"),
    )
    assert prefilled.continue_final_message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"messages": []}, "messages"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": "gkt@999"}, "model"),
        ({"gkt": {"guidance_tokens": 999}}, "gkt.guidance_tokens"),
        ({"stop": ""}, "stop"),
        ({"stop": ["\n", ""]}, "stop[1]"),
        ({"n": 3}, "n"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"seed": 2**64}, "seed"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream: true
        ({"presence_penalty": 0.5}, "presence_penalty"),  # used to be ignored silently
        ({"frequency_penalty": -1.0}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_errors_name_the_field_as_the_caller_spelt_it(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        chat_request(chat(**fields), SETTINGS)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


def test_neutral_sampler_options_are_accepted_and_any_log_probabilities_refused() -> None:
    """Accepted or refused consistently: neutral values change nothing; `logprobs: 0` on completions still asks for
    the sampled tokens' log-probabilities, so it is refused like any other number."""
    chat_request(chat(presence_penalty=0.0, frequency_penalty=0.0, logit_bias={}, logprobs=False), SETTINGS)
    completion_request(CompletionRequest(prompt="one", presence_penalty=0.0, logit_bias={}), SETTINGS)
    for fields in ({"logprobs": 0}, {"frequency_penalty": 0.3}, {"logit_bias": {"1": 5}}):
        with pytest.raises(InvalidArgumentError) as caught:
            completion_request(CompletionRequest(prompt="one", **fields), SETTINGS)
        assert caught.value.field == next(iter(fields))


def test_completion_takes_one_text_prompt() -> None:
    assert completion_request(CompletionRequest(prompt=["one"]), SETTINGS).params.input.prompt == "one"
    with pytest.raises(InvalidArgumentError) as caught:
        completion_request(CompletionRequest(prompt=["one", "two"]), SETTINGS)
    assert caught.value.field == "prompt"


def test_usage_is_the_whole_answers_not_the_tiers_added_up() -> None:
    usage = Usage(
        teacher_prompt_tokens=10,
        teacher_completion_tokens=4,
        teacher_cached_prompt_tokens=2,
        student_prompt_tokens=20,
        student_completion_tokens=30,
        student_guidance_tokens=5,
        student_cached_prompt_tokens=3,
        prompt_tokens=15,
        completion_tokens=35,
        total_tokens=50,
        cached_prompt_tokens=3,
    )
    out = usage_of(Answer("g", "s", "gkt", "stop", usage, Timings()))
    assert (out.prompt_tokens, out.completion_tokens, out.total_tokens) == (15, 35, 50)
    assert out.prompt_tokens_details.cached_tokens == 3


@pytest.mark.parametrize(
    ("loc", "name"),
    [
        (("body", "temperature"), "temperature"),
        (("body", "gkt", "mode"), "gkt.mode"),
        (("body", "messages", 0, "role"), "messages[0].role"),
        (("body", "stop", "list[str]", 1), "stop[1]"),
        (("body", "stop", "str"), "stop"),
        (("body",), ""),
    ],
)
def test_validation_error_locations_become_field_names(loc: tuple[Any, ...], name: str) -> None:
    assert field_name(loc) == name


@pytest.mark.parametrize("value", ["off", "OFF", "", "none"])
def test_the_http_api_can_be_turned_off_from_the_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge image turns the HTTP API on with GKT_EDGE_HTTP_PORT=8080; its environment can turn it off again."""
    monkeypatch.setenv("GKT_EDGE_HTTP_PORT", value)
    assert EdgeSettings().http_port is None
    monkeypatch.setenv("GKT_EDGE_HTTP_PORT", "8080")
    assert EdgeSettings().http_port == 8080
    monkeypatch.setenv("GKT_EDGE_HTTP_PORT", "eighty")
    with pytest.raises(ValueError, match="http_port"):
        EdgeSettings()


def test_escalation_belongs_to_the_adaptive_policy() -> None:
    """An edge that escalates by default still serves verify requests (its default is adaptive's), a request asking
    for both is told which field is wrong, and an edge configured for both refuses to start."""
    escalating = EdgeSettings(escalate=True, default_guidance_tokens=4)
    params = chat_request(chat(gkt={"guidance_policy": {"kind": "verify"}}), escalating).params
    assert params.policy.kind == "verify" and not params.policy.escalate
    adaptive = chat_request(chat(gkt={"guidance_policy": {"kind": "adaptive"}}), escalating).params
    assert adaptive.policy.escalate
    with pytest.raises(InvalidArgumentError) as caught:
        chat_request(chat(gkt={"guidance_policy": {"kind": "verify", "escalate": True}}), SETTINGS)
    assert caught.value.field == "gkt.guidance_policy.escalate"
    with pytest.raises(ValueError, match="escalate applies to the adaptive policy"):
        EdgeSettings(guidance_policy="verify", escalate=True)
