"""The OpenAI-compatible API's request and response bodies, as pydantic models (the subset the edge serves, plus the
`gkt` extension object; the official `openai` client sends it with `extra_body={"gkt": {...}}`).

Requests accept fields of OpenAI's API that the edge does not use (`user`, `metadata`, ...) and ignore them; the few
that would change the answer in a way the edge cannot honour (`n` > 1, `logprobs`, `tools`, ...) are declared here so
that the facade can refuse them by name. Numbers and flags are strict: `true` is not a token count, `"0.5"` not a
temperature. Usage and timings per tier are the domain dataclasses themselves, so they read as on gRPC.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from shared.protocol.domain import (
    AcceptanceName,
    DegradedReason,
    GuidanceEnd,
    Mode,
    PolicyKind,
    Segment,
    Timings,
    Usage,
    Verification,
)

# ---- requests -------------------------------------------------------------------------------------------------

# The `gkt.mode` words: the `gkt ask --mode` words, and the domain's names (which responses report).
ModeWord = Literal["gkt", "student", "teacher", "student_only", "teacher_only"]


class GuidancePolicyIn(BaseModel):
    """`gkt.guidance_policy`: any guidance policy with its parameters (as gRPC's `GuidancePolicy`); unset fields take
    the edge's defaults."""

    model_config = ConfigDict(extra="forbid")

    kind: PolicyKind | None = Field(None, description="fixed | adaptive | verify (default: the edge's).")
    floor_tokens: StrictInt | None = None
    window: StrictInt | None = None
    min_top1_fraction: StrictFloat | StrictInt | None = None
    min_mean_logprob: StrictFloat | StrictInt | None = None
    escalate: StrictBool | None = None
    entropy_threshold: StrictFloat | StrictInt | None = None
    entropy_run: StrictInt | None = None
    max_bursts: StrictInt | None = None
    burst_tokens: StrictInt | None = None
    draft_tokens: StrictInt | None = Field(None, description="Verify: student tokens per draft.")
    acceptance: AcceptanceName | None = Field(None, description="Verify: strict | min_teacher_prob | speculative.")
    min_teacher_prob: StrictFloat | StrictInt | None = None
    draft_min_prob: StrictFloat | StrictInt | None = None
    correction_tokens: StrictInt | None = None


class GktOptions(BaseModel):
    """The `gkt` extension of a request: overrides what the model name implies."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be ignored silently

    mode: ModeWord | None = Field(None, description="gkt | student | teacher (default: from the model name).")
    guidance_tokens: StrictInt | None = Field(None, description="K: teacher tokens of guidance (default: the edge's).")
    timeout_seconds: StrictFloat | None = Field(
        None, gt=0, description="The request's deadline: past it the answer stops and the request gets 504."
    )
    guidance_policy: GuidancePolicyIn | None = Field(None, description="The guidance policy (default: the edge's).")


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatMessageIn(BaseModel):
    """A chat turn; `content` is text or a list of text parts (other part types are refused)."""

    model_config = ConfigDict(extra="allow")  # e.g. `name`: accepted, not used

    role: str
    content: str | list[dict[str, Any]] | None = None


class _CommonRequest(BaseModel):
    """What both completion endpoints accept."""

    model_config = ConfigDict(extra="allow")  # OpenAI fields the edge does not use are ignored, as vLLM does

    model: str = Field("gkt", description="gkt | gkt-student | gkt-teacher | gkt@K.")
    max_tokens: StrictInt | None = Field(
        None,
        description="The most tokens of the whole answer (guidance + student, in the student's tokenizer); "
        "K is clipped to it.",
    )
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    n: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = Field(None, description="Only with `stream: true`.")
    gkt: GktOptions | None = None
    # Declared to be refused when used: the edge writes one answer, without log probabilities, and its samplers
    # have no penalties or biases (ignoring them would change the answer silently).
    logprobs: Any = None
    best_of: StrictInt | None = None
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    logit_bias: dict[str, Any] | None = None


class ChatCompletionRequest(_CommonRequest):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessageIn]
    max_completion_tokens: StrictInt | None = Field(None, description="`max_tokens` by its newer name (wins).")
    continue_final_message: StrictBool = Field(
        False, description="The last message is the assistant's, to be continued (vLLM's name)."
    )
    # Declared to be refused when used.
    top_logprobs: StrictInt | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_CommonRequest):
    """`POST /v1/completions`: one text prompt, used as is by both models."""

    prompt: str | list[str]
    # Declared to be refused when used.
    echo: StrictBool = False
    suffix: str | None = None


# ---- responses ------------------------------------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class UsageOut(BaseModel):
    """OpenAI's usage, as a one-model answer reports it, in the student's tokenizer: `prompt_tokens` the prompt once,
    `completion_tokens` the whole answer (guidance included); the `gkt` extension has the counts per tier."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class GktAnswer(BaseModel):
    """The `gkt` extension of a response: the answer's fields as the gRPC API reports them (not yet why the guidance
    ended, nor the escalation bursts)."""

    mode: Mode
    guidance_tokens: int = Field(
        description="K asked for in GKT mode (the teacher may have written fewer); 0 in the student and teacher modes."
    )
    guidance_text: str
    student_text: str
    degraded: bool
    degraded_reason: DegradedReason | None
    usage: Usage
    timings: Timings
    guidance_end: GuidanceEnd | None = None
    verification: Verification | None = Field(None, description="The verify policy's rounds and token counts.")


class GktDelta(BaseModel):
    """The `gkt` extension of a streamed chunk: which model wrote its text."""

    segment: Segment


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    gkt: GktAnswer


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]  # {"role": ..., "content": ...} as far as the chunk has them; {} on the last one
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageOut | None = None  # only with stream_options.include_usage: null, then set on the last chunk
    gkt: GktDelta | GktAnswer | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: None = None


class Completion(BaseModel):
    """A `/v1/completions` response, and (with `finish_reason` null until the last) each of its streamed chunks."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageOut | None = None
    gkt: GktDelta | GktAnswer | None = None


class ModelInfo(BaseModel):
    """The `gkt` extension of a model card: what requests naming it do."""

    mode: Mode
    guidance_tokens: int
    student: str
    description: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gkt"
    gkt: ModelInfo


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail
