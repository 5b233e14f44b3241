"""Protobuf <-> domain dataclasses, for both services: the servicers and the teacher client convert here, and so do
the apps (`EdgeClient`, `gkt ask`, the benchmark) for the words they print; model code never touches protobuf."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from shared.protocol.domain import (
    MODES_BY_NAME,
    AcceptanceName,
    Answer,
    AnswerDelta,
    ChatMessage,
    DegradedReason,
    FinishReason,
    GuidanceDelta,
    GuidanceDone,
    GuidanceParams,
    GuidancePolicy,
    Mode,
    ModeName,
    PolicyKind,
    PromptInput,
    Sampling,
    ServerInfo,
    TeacherTimings,
)
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, teacher_pb2
from shared.protocol.validation import validate_prompt_input, validate_sampling

_FINISH_TO_PB = {
    "length": common_pb2.FINISH_REASON_LENGTH,
    "stop": common_pb2.FINISH_REASON_STOP,
    "cancelled": common_pb2.FINISH_REASON_CANCELLED,
}
_FINISH_FROM_PB: dict[int, FinishReason] = {v: k for k, v in _FINISH_TO_PB.items()}  # type: ignore[misc]
_MODE_TO_PB = {
    "gkt": edge_pb2.MODE_GKT,
    "student_only": edge_pb2.MODE_STUDENT_ONLY,
    "teacher_only": edge_pb2.MODE_TEACHER_ONLY,
}
_MODE_FROM_PB: dict[int, Mode] = {
    edge_pb2.MODE_UNSPECIFIED: "gkt",
    edge_pb2.MODE_GKT: "gkt",
    edge_pb2.MODE_STUDENT_ONLY: "student_only",
    edge_pb2.MODE_TEACHER_ONLY: "teacher_only",
}
_SEGMENT_TO_PB = {
    "guidance": edge_pb2.SEGMENT_GUIDANCE,
    "student": edge_pb2.SEGMENT_STUDENT,
    "verified": edge_pb2.SEGMENT_VERIFIED,
    "correction": edge_pb2.SEGMENT_CORRECTION,
}
_DEGRADED_TO_PB = {
    "unavailable": edge_pb2.DEGRADED_REASON_UNAVAILABLE,
    "deadline": edge_pb2.DEGRADED_REASON_DEADLINE,
    "overloaded": edge_pb2.DEGRADED_REASON_OVERLOADED,
    "unauthorized": edge_pb2.DEGRADED_REASON_UNAUTHORIZED,
    "error": edge_pb2.DEGRADED_REASON_ERROR,
    "circuit_open": edge_pb2.DEGRADED_REASON_CIRCUIT_OPEN,
}
# Requests that carry an input (`oneof input`, `system_prompt`, `continue_final_message`) and `sampling`.
InputRequest = teacher_pb2.GuidanceRequest | teacher_pb2.VerifyRequest | edge_pb2.GenerateRequest
DEGRADED_FROM_PB: dict[int, DegradedReason] = {v: k for k, v in _DEGRADED_TO_PB.items()}  # type: ignore[misc]


_GUIDANCE_END_TO_PB = {
    "k_reached": edge_pb2.GUIDANCE_END_K_REACHED,
    "student_agreed": edge_pb2.GUIDANCE_END_STUDENT_AGREED,
    "teacher_finished": edge_pb2.GUIDANCE_END_TEACHER_FINISHED,
    "deadline": edge_pb2.GUIDANCE_END_DEADLINE,
    "teacher_failed": edge_pb2.GUIDANCE_END_TEACHER_FAILED,
}
_POLICY_FROM_PB: dict[int, PolicyKind] = {
    edge_pb2.GuidancePolicy.KIND_FIXED: "fixed",
    edge_pb2.GuidancePolicy.KIND_ADAPTIVE: "adaptive",
    edge_pb2.GuidancePolicy.KIND_VERIFY: "verify",
}
_ACCEPTANCE_FROM_PB: dict[int, AcceptanceName] = {
    edge_pb2.GuidancePolicy.ACCEPTANCE_STRICT: "strict",
    edge_pb2.GuidancePolicy.ACCEPTANCE_MIN_TEACHER_PROB: "min_teacher_prob",
    edge_pb2.GuidancePolicy.ACCEPTANCE_SPECULATIVE: "speculative",
}


def policy_from_pb(message: edge_pb2.GuidancePolicy, defaults: GuidancePolicy) -> GuidancePolicy:
    """A request's guidance policy: its fields where set, the edge's defaults elsewhere."""
    values: dict[str, object] = {"kind": _POLICY_FROM_PB.get(message.kind, defaults.kind)}
    if message.escalate:
        values["escalate"] = True
    if message.acceptance:
        if message.acceptance not in _ACCEPTANCE_FROM_PB:
            raise InvalidArgumentError("guidance_policy.acceptance", f"unknown acceptance rule {message.acceptance}")
        values["acceptance"] = _ACCEPTANCE_FROM_PB[message.acceptance]
    for name in (
        "floor_tokens",
        "window",
        "min_top1_fraction",
        "min_mean_logprob",
        "entropy_threshold",
        "entropy_run",
        "max_bursts",
        "burst_tokens",
        "draft_tokens",
        "min_teacher_prob",
        "draft_min_prob",
        "correction_tokens",
    ):
        if message.HasField(name):
            values[name] = getattr(message, name)
    return request_policy(defaults, values)


def request_policy(defaults: GuidancePolicy, chosen: dict[str, object]) -> GuidancePolicy:
    """A request's policy: the fields it chose, the edge's defaults elsewhere. The edge's escalation default belongs
    to the adaptive policy, so a request that picks `verify` takes it only when it asks for it."""
    policy = dataclasses.replace(defaults, **chosen)  # type: ignore[arg-type]
    if policy.kind == "verify" and "escalate" not in chosen:
        policy = dataclasses.replace(policy, escalate=False)
    return policy


def degraded_reason_name(value: int) -> str:
    """A response's `degraded_reason` as a word ("deadline", ...), "" when the answer is not degraded."""
    return DEGRADED_FROM_PB.get(value, "")


def prompt_input_from_pb(request: InputRequest) -> PromptInput:
    """The request's input: the `oneof` holds a raw prompt or a conversation (validation checks it holds one)."""
    return PromptInput(
        prompt=request.prompt,
        messages=tuple(ChatMessage(role=m.role, content=m.content) for m in request.conversation.messages),
        system_prompt=request.system_prompt,
        continue_final_message=request.continue_final_message,
    )


def _input_to_pb(prompt_input: PromptInput) -> dict[str, object]:
    if prompt_input.messages:
        messages = [common_pb2.ChatMessage(role=m.role, content=m.content) for m in prompt_input.messages]
        return {"conversation": common_pb2.Conversation(messages=messages)}
    return {"prompt": prompt_input.prompt}


input_to_pb = _input_to_pb  # the request's `oneof input` as keyword arguments (for the Verify RPC's conversions)


def sampling_from_pb(sampling: common_pb2.Sampling, *, temperature: float, top_p: float) -> Sampling:
    """Sampling settings; unset optional fields take the given defaults."""
    return Sampling(
        temperature=sampling.temperature if sampling.HasField("temperature") else temperature,
        top_p=sampling.top_p if sampling.HasField("top_p") else top_p,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=tuple(sampling.stop),
    )


class RequestDefaults(Protocol):
    """The tier settings a request is decoded against (both tiers' settings classes have them)."""

    @property
    def max_prompt_chars(self) -> int: ...
    @property
    def default_temperature(self) -> float: ...
    @property
    def default_top_p(self) -> float: ...


def input_and_sampling_from_pb(request: InputRequest, settings: RequestDefaults) -> tuple[PromptInput, Sampling]:
    """What both tiers' requests share, decoded, the tier's defaults filled in and validated against its limits
    (`InvalidArgumentError` names the field)."""
    prompt_input = prompt_input_from_pb(request)
    validate_prompt_input(prompt_input, max_prompt_chars=settings.max_prompt_chars)
    sampling = sampling_from_pb(
        request.sampling, temperature=settings.default_temperature, top_p=settings.default_top_p
    )
    validate_sampling(sampling)
    return prompt_input, sampling


def mode_name_to_pb(name: ModeName) -> edge_pb2.Mode:
    """The wire's mode for a mode's name ("gkt", "student", "teacher")."""
    return _MODE_TO_PB[MODES_BY_NAME[name]]


def mode_name_from_pb(value: int) -> ModeName:
    """A response's mode as its name ("gkt", "student", "teacher"); unset means GKT."""
    mode = mode_from_pb(value) if value in _MODE_FROM_PB else "gkt"
    return next(name for name, named in MODES_BY_NAME.items() if named == mode)


def finish_reason_name(value: int) -> str:
    """A response's finish reason as a word ("length", "stop", "cancelled"; "unspecified" when unset)."""
    return common_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def guidance_end_name(value: int) -> str:
    """Why a response's guidance ended, as a word ("k_reached", ...); "" when it asked for none."""
    end = edge_pb2.GuidanceEnd.Name(value).removeprefix("GUIDANCE_END_").lower()
    return "" if end == "unspecified" else end


def sampling_to_pb(sampling: Sampling) -> common_pb2.Sampling:
    return common_pb2.Sampling(
        temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed, stop=list(sampling.stop)
    )


def mode_from_pb(value: int) -> Mode:
    try:
        return _MODE_FROM_PB[value]
    except KeyError:
        raise InvalidArgumentError("mode", f"unknown mode {value}; use GKT, STUDENT_ONLY or TEACHER_ONLY") from None


def guidance_request_to_pb(params: GuidanceParams) -> teacher_pb2.GuidanceRequest:
    return teacher_pb2.GuidanceRequest(
        **_input_to_pb(params.input),  # type: ignore[arg-type]
        system_prompt=params.input.system_prompt,
        continue_final_message=params.input.continue_final_message,
        max_tokens=params.max_tokens,
        sampling=sampling_to_pb(params.sampling),
    )


def guidance_delta_to_pb(delta: GuidanceDelta) -> teacher_pb2.GuidanceChunk:
    return teacher_pb2.GuidanceChunk(
        delta=teacher_pb2.GuidanceDelta(
            text=delta.text,
            usage=teacher_pb2.TeacherUsage(
                prompt_tokens=delta.prompt_tokens,
                completion_tokens=delta.completion_tokens,
                cached_prompt_tokens=delta.cached_prompt_tokens,
            ),
        )
    )


def guidance_delta_from_pb(delta: teacher_pb2.GuidanceDelta) -> GuidanceDelta:
    usage = delta.usage
    return GuidanceDelta(delta.text, usage.completion_tokens, usage.prompt_tokens, usage.cached_prompt_tokens)


def guidance_done_to_pb(done: GuidanceDone) -> teacher_pb2.GuidanceChunk:
    return teacher_pb2.GuidanceChunk(
        done=teacher_pb2.GuidanceDone(
            usage=teacher_pb2.TeacherUsage(
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                cached_prompt_tokens=done.cached_prompt_tokens,
            ),
            finish_reason=_FINISH_TO_PB[done.finish_reason],
            timings=teacher_pb2.TeacherTimings(**dataclasses.asdict(done.timings)),
        )
    )


def guidance_done_from_pb(done: teacher_pb2.GuidanceDone) -> GuidanceDone:
    return GuidanceDone(
        prompt_tokens=done.usage.prompt_tokens,
        completion_tokens=done.usage.completion_tokens,
        # Only an explicit STOP says the teacher finished the answer; unset (or unknown) means it has not, and the
        # student goes on from the guidance rather than cutting the answer short.
        finish_reason=_FINISH_FROM_PB.get(done.finish_reason, "length"),
        timings=TeacherTimings(
            queue_seconds=done.timings.queue_seconds,
            time_to_first_token_seconds=done.timings.time_to_first_token_seconds,
            total_seconds=done.timings.total_seconds,
        ),
        cached_prompt_tokens=done.usage.cached_prompt_tokens,
    )


def answer_to_pb(answer: Answer) -> edge_pb2.GenerateResponse:
    return edge_pb2.GenerateResponse(
        text=answer.text,
        guidance_text=answer.guidance_text,
        student_text=answer.student_text,
        mode=_MODE_TO_PB[answer.mode],
        degraded=answer.degraded,
        degraded_reason=(
            _DEGRADED_TO_PB[answer.degraded_reason] if answer.degraded_reason else edge_pb2.DEGRADED_REASON_UNSPECIFIED
        ),
        finish_reason=_FINISH_TO_PB[answer.finish_reason],
        usage=edge_pb2.Usage(**dataclasses.asdict(answer.usage)),
        timings=edge_pb2.Timings(**dataclasses.asdict(answer.timings)),
        guidance_end=(
            _GUIDANCE_END_TO_PB[answer.guidance_end] if answer.guidance_end else edge_pb2.GUIDANCE_END_UNSPECIFIED
        ),
        bursts=[edge_pb2.Burst(**dataclasses.asdict(burst)) for burst in answer.bursts],
        verification=(
            edge_pb2.Verification(**dataclasses.asdict(answer.verification)) if answer.verification else None
        ),
    )


def answer_delta_to_pb(delta: AnswerDelta) -> edge_pb2.GenerateStreamChunk:
    return edge_pb2.GenerateStreamChunk(
        delta=edge_pb2.AnswerDelta(text=delta.text, segment=_SEGMENT_TO_PB[delta.segment])
    )


def server_info_to_pb(info: ServerInfo) -> common_pb2.ServerInfo:
    return common_pb2.ServerInfo(**dataclasses.asdict(info))


def server_info_from_pb(message: common_pb2.ServerInfo) -> ServerInfo:
    return ServerInfo(**{f.name: getattr(message, f.name) for f in dataclasses.fields(ServerInfo)})
