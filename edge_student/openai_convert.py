"""OpenAI request bodies -> the edge's `GenerateParams`, and answers -> OpenAI response bodies.

Requests go through `generate_params`, the function the gRPC servicer uses, so both APIs share defaults and validation.
Only the names differ: an error about the domain's `prompt` names `messages` on the chat endpoint, `guidance_tokens`
names `gkt.guidance_tokens` or `model` (wherever K came from), and so on, so the 400 names a field the caller sent.

The model name routes a request, in the spirit of RouteLLM: `gkt` (guidance then student), `gkt-student`,
`gkt-teacher`, and `gkt@K` for GKT with K guidance tokens. The `gkt` extension object overrides what the name implies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge_student.openai_types import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FinishReason,
    GktAnswer,
    ModelCard,
    ModelInfo,
    PromptTokensDetails,
    UsageOut,
)
from edge_student.request_params import generate_params, resolve_guidance_tokens
from edge_student.settings import EdgeSettings
from shared.protocol.convert import request_policy
from shared.protocol.domain import MODES_BY_NAME, Answer, ChatMessage, GenerateParams, Mode, PromptInput
from shared.protocol.errors import InvalidArgumentError, NotFoundError

# The model names and what they mean (the `gkt@K` family is parsed).
MODELS: dict[str, tuple[Mode, str]] = {
    "gkt": ("gkt", "the teacher writes the first K tokens of the answer, the student the rest"),
    "gkt-student": ("student_only", "the student alone (no teacher call)"),
    "gkt-teacher": ("teacher_only", "the teacher alone"),
}
_GUIDED = re.compile(r"gkt@(\d{1,9})")
# Parts of a pydantic error location that name a union member, not a field (`stop` is `str | list[str]`).
_TYPE_TAG = re.compile(r"str|int|float|bool|list|dict|.*[\[\]\-].*")
# The modes' names, and the domain's own words for them too.
_MODE_WORDS: dict[str, Mode] = {word: mode for name, mode in MODES_BY_NAME.items() for word in (name, mode)}


class UnknownModelError(NotFoundError):
    """A model name the edge does not serve (404 with `param: model`, as OpenAI answers)."""

    field = "model"


@dataclass(frozen=True)
class ModelRoute:
    """What a model name asks for; `guidance_tokens` None means the edge's default K."""

    mode: Mode
    guidance_tokens: int | None = None


def route_model(name: str) -> ModelRoute:
    """`gkt`, `gkt-student`, `gkt-teacher` or `gkt@K`; anything else raises `UnknownModelError`."""
    if name in MODELS:
        return ModelRoute(MODELS[name][0])
    if match := _GUIDED.fullmatch(name):
        return ModelRoute("gkt", int(match.group(1)))
    raise UnknownModelError(
        f"the model {name[:80]!r} does not exist; use one of {', '.join(MODELS)} or gkt@K (K guidance tokens)"
    )


def model_card(name: str, settings: EdgeSettings, created: int) -> ModelCard:
    """`GET /v1/models[/name]`: what a model name does on this edge."""
    route = route_model(name)
    k = 0
    if route.mode == "gkt":
        try:
            k = resolve_guidance_tokens(settings, route.guidance_tokens)
        except InvalidArgumentError as error:
            raise _on_wire(error, {"guidance_tokens": "model"}) from None  # K of gkt@K
    description = MODELS[name][1] if name in MODELS else f"GKT with {k} guidance tokens"
    return ModelCard(
        id=name,
        created=created,
        gkt=ModelInfo(
            mode=route.mode,
            guidance_tokens=k,
            student=settings.model,
            description=description,
        ),
    )


@dataclass(frozen=True)
class TranslatedRequest:
    """An OpenAI request as the edge runs it."""

    params: GenerateParams
    model: str  # as the caller named it (echoed in responses)
    stream: bool
    include_usage: bool
    timeout_seconds: float | None
    wire_names: Mapping[str, str] = field(default_factory=dict)  # domain field -> the field the caller sent

    def on_wire(self, error: InvalidArgumentError) -> InvalidArgumentError:
        """The same error, naming the field as this request spelled it."""
        return _on_wire(error, self.wire_names)


def _on_wire(error: InvalidArgumentError, names: Mapping[str, str]) -> InvalidArgumentError:
    name = names.get(error.field, error.field)
    return error if name == error.field else InvalidArgumentError(name, error.problem)


def _refuse_sampler_options(body: ChatCompletionRequest | CompletionRequest) -> None:
    """Options that would change the answer and that the edge's samplers do not have: refused when set to anything
    but their neutral value, never ignored (an app would get an answer it did not ask for)."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        _refuse(name, value not in (None, 0.0), "penalties are not supported (0 or unset only)")
    _refuse("logit_bias", bool(body.logit_bias), "logit biases are not supported (empty or unset only)")


def chat_request(body: ChatCompletionRequest, settings: EdgeSettings) -> TranslatedRequest:
    """A chat completion request, validated as gRPC validates a conversation."""
    _refuse("n", body.n not in (None, 1), "only n=1 is supported: the edge writes one answer per request")
    _refuse_sampler_options(body)
    _refuse("logprobs", bool(body.logprobs) or body.top_logprobs is not None, "log probabilities are not supported")
    _refuse("tools", bool(body.tools), "tool calls are not supported")
    _refuse(
        "response_format",
        body.response_format is not None and body.response_format.get("type", "text") != "text",
        "only text responses are supported",
    )
    messages = tuple(_message(index, message) for index, message in enumerate(body.messages))
    prompt_input = PromptInput(messages=messages, continue_final_message=body.continue_final_message)
    use_completion_field = body.max_completion_tokens is not None
    max_tokens = body.max_completion_tokens if use_completion_field else body.max_tokens
    names = {"prompt": "messages", "max_tokens": "max_completion_tokens" if use_completion_field else "max_tokens"}
    return _translate(body, settings, prompt_input, max_tokens, names)


def completion_request(body: CompletionRequest, settings: EdgeSettings) -> TranslatedRequest:
    """A text completion request: the prompt goes to both models as is, like gRPC's raw `prompt`."""
    _refuse("n", body.n not in (None, 1), "only n=1 is supported: the edge writes one answer per request")
    _refuse("best_of", body.best_of not in (None, 1), "only best_of=1 is supported")
    # `logprobs: 0` still asks for the sampled tokens' log-probabilities: refused like any other number.
    _refuse("logprobs", body.logprobs is not None and body.logprobs is not False, "log probabilities are not supported")
    _refuse_sampler_options(body)
    _refuse("echo", body.echo, "echoing the prompt is not supported")
    _refuse("suffix", bool(body.suffix), "a suffix (fill-in-the-middle) is not supported")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    _refuse("prompt", len(prompts) != 1, f"one prompt per request, got {len(prompts)}")
    return _translate(body, settings, PromptInput(prompt=prompts[0]), body.max_tokens, {})


def _translate(
    body: ChatCompletionRequest | CompletionRequest,
    settings: EdgeSettings,
    prompt_input: PromptInput,
    max_tokens: int | None,
    names: dict[str, str],
) -> TranslatedRequest:
    route = route_model(body.model)
    options = body.gkt
    mode = _MODE_WORDS[options.mode] if options is not None and options.mode is not None else route.mode
    guidance_tokens = route.guidance_tokens
    if options is not None and options.guidance_tokens is not None:
        guidance_tokens = options.guidance_tokens
        names["guidance_tokens"] = "gkt.guidance_tokens"
    elif guidance_tokens is not None:
        names["guidance_tokens"] = "model"
    _refuse(
        "stream_options", body.stream_options is not None and not body.stream, "is only allowed when stream is true"
    )
    policy = None
    if options is not None and options.guidance_policy is not None:
        chosen = options.guidance_policy.model_dump(exclude_none=True)
        policy = request_policy(settings.default_policy(), chosen)
        names.update({f"guidance_policy.{name}": f"gkt.guidance_policy.{name}" for name in chosen})
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    if isinstance(body.stop, str):
        names["stop[0]"] = "stop"
    try:
        params = generate_params(
            settings,
            prompt_input,
            mode=mode,
            guidance_tokens=guidance_tokens,
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
            policy=policy,
        )
    except InvalidArgumentError as error:
        raise _on_wire(error, names) from None
    return TranslatedRequest(
        params=params,
        model=body.model,
        stream=body.stream,
        include_usage=body.stream_options is not None and body.stream_options.include_usage,
        timeout_seconds=options.timeout_seconds if options is not None else None,
        wire_names=names,
    )


def _refuse(name: str, refused: bool, problem: str) -> None:
    if refused:
        raise InvalidArgumentError(name, problem)


def _message(index: int, message: ChatMessageIn) -> ChatMessage:
    """A chat turn: text content (text parts joined); OpenAI's `developer` role is the system role."""
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if content is None:
        raise InvalidArgumentError(f"messages[{index}].content", "is missing")
    if isinstance(content, str):
        return ChatMessage(role, content)
    texts = []
    for part_index, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidArgumentError(
                f"messages[{index}].content[{part_index}]", "only text parts are supported ({'type': 'text', ...})"
            )
        texts.append(part["text"])
    return ChatMessage(role, "".join(texts))


def field_name(loc: Sequence[object]) -> str:
    """A pydantic error location as the caller wrote the field: ("body", "messages", 0, "role") -> messages[0].role."""
    name = ""
    for part in list(loc)[1:]:  # loc[0] is "body"
        if isinstance(part, int):
            name += f"[{part}]"
        elif not _TYPE_TAG.fullmatch(str(part)):
            name += f".{part}" if name else str(part)
    return name


# ---- responses ------------------------------------------------------------------------------------------------


def finish_reason(answer: Answer) -> FinishReason:
    return "length" if answer.finish_reason == "length" else "stop"


def usage_out(answer: Answer) -> UsageOut:
    """The whole answer's usage, as a one-model answer reports it (in the student's tokenizer): the prompt once, the
    answer with its guidance; the per-tier counts are in the `gkt` extension."""
    u = answer.usage
    return UsageOut(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_prompt_tokens),
    )


def gkt_answer(answer: Answer) -> GktAnswer:
    return GktAnswer(
        mode=answer.mode,
        guidance_tokens=answer.guidance_tokens,
        guidance_text=answer.guidance_text,
        student_text=answer.student_text,
        degraded=answer.degraded,
        degraded_reason=answer.degraded_reason,
        usage=answer.usage,
        timings=answer.timings,
        guidance_end=answer.guidance_end,
        verification=answer.verification,
    )


def chat_completion(answer: Answer, request: TranslatedRequest, response_id: str, created: int) -> ChatCompletion:
    return ChatCompletion(
        id=response_id,
        created=created,
        model=request.model,
        choices=[ChatChoice(message=ChatMessageOut(content=answer.text), finish_reason=finish_reason(answer))],
        usage=usage_out(answer),
        gkt=gkt_answer(answer),
    )


def completion(answer: Answer, request: TranslatedRequest, response_id: str, created: int) -> Completion:
    return Completion(
        id=response_id,
        created=created,
        model=request.model,
        choices=[CompletionChoice(text=answer.text, finish_reason=finish_reason(answer))],
        usage=usage_out(answer),
        gkt=gkt_answer(answer),
    )
