"""Protobuf <-> domain dataclasses, for both services; the only module besides servicers that touches protobuf."""

from __future__ import annotations

import dataclasses

from shared.domain import (
    Answer,
    AnswerDelta,
    ChatMessage,
    FinishReason,
    GuidanceDone,
    GuidanceParams,
    Mode,
    PromptInput,
    Sampling,
    ServerInfo,
    TeacherTimings,
)
from shared.errors import InvalidArgumentError
from shared.gkt.v1 import common_pb2, edge_pb2, teacher_pb2

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
_MODE_FROM_PB: dict[int, Mode] = {edge_pb2.MODE_UNSPECIFIED: "gkt", **{v: k for k, v in _MODE_TO_PB.items()}}  # type: ignore[dict-item]
_SEGMENT_TO_PB = {"guidance": edge_pb2.SEGMENT_GUIDANCE, "student": edge_pb2.SEGMENT_STUDENT}


def prompt_input_from_pb(request: teacher_pb2.GuidanceRequest | edge_pb2.GenerateRequest) -> PromptInput:
    return PromptInput(
        prompt=request.prompt,
        messages=tuple(ChatMessage(role=m.role, content=m.content) for m in request.messages),
        system_prompt=request.system_prompt,
    )


def _messages_to_pb(prompt_input: PromptInput) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=m.role, content=m.content) for m in prompt_input.messages]


def sampling_from_pb(
    request: teacher_pb2.GuidanceRequest | edge_pb2.GenerateRequest, *, temperature: float, top_p: float
) -> Sampling:
    """Sampling settings; unset optional fields take the given defaults."""
    return Sampling(
        temperature=request.temperature if request.HasField("temperature") else temperature,
        top_p=request.top_p if request.HasField("top_p") else top_p,
        seed=request.seed if request.HasField("seed") else None,
        stop=tuple(request.stop),
    )


def mode_from_pb(value: int) -> Mode:
    try:
        return _MODE_FROM_PB[value]
    except KeyError:
        raise InvalidArgumentError("mode", f"unknown mode {value}; use GKT, STUDENT_ONLY or TEACHER_ONLY") from None


def mode_to_pb(mode: Mode) -> int:
    return _MODE_TO_PB[mode]


def guidance_request_to_pb(params: GuidanceParams) -> teacher_pb2.GuidanceRequest:
    request = teacher_pb2.GuidanceRequest(
        prompt=params.input.prompt,
        messages=_messages_to_pb(params.input),
        system_prompt=params.input.system_prompt,
        max_guidance_tokens=params.max_guidance_tokens,
        temperature=params.sampling.temperature,
        top_p=params.sampling.top_p,
        stop=list(params.sampling.stop),
    )
    if params.sampling.seed is not None:
        request.seed = params.sampling.seed
    return request


def guidance_done_to_pb(done: GuidanceDone) -> teacher_pb2.GuidanceChunk:
    return teacher_pb2.GuidanceChunk(
        done=True,
        usage=teacher_pb2.TeacherUsage(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            cached_prompt_tokens=done.cached_prompt_tokens,
        ),
        finish_reason=_FINISH_TO_PB[done.finish_reason],
        timings=teacher_pb2.TeacherTimings(
            queue_seconds=done.timings.queue_seconds,
            time_to_first_token_seconds=done.timings.time_to_first_token_seconds,
            total_seconds=done.timings.total_seconds,
        ),
    )


def guidance_done_from_pb(chunk: teacher_pb2.GuidanceChunk) -> GuidanceDone:
    return GuidanceDone(
        prompt_tokens=chunk.usage.prompt_tokens,
        completion_tokens=chunk.usage.completion_tokens,
        finish_reason=_FINISH_FROM_PB.get(chunk.finish_reason, "stop"),
        timings=TeacherTimings(
            queue_seconds=chunk.timings.queue_seconds,
            time_to_first_token_seconds=chunk.timings.time_to_first_token_seconds,
            total_seconds=chunk.timings.total_seconds,
        ),
        cached_prompt_tokens=chunk.usage.cached_prompt_tokens,
    )


def answer_to_pb(answer: Answer) -> edge_pb2.GenerateResponse:
    u, t = answer.usage, answer.timings
    return edge_pb2.GenerateResponse(
        text=answer.text,
        guidance_text=answer.guidance_text,
        student_text=answer.student_text,
        mode=_MODE_TO_PB[answer.mode],
        degraded=answer.degraded,
        degraded_reason=answer.degraded_reason,
        finish_reason=_FINISH_TO_PB[answer.finish_reason],
        usage=edge_pb2.Usage(
            teacher_prompt_tokens=u.teacher_prompt_tokens,
            teacher_completion_tokens=u.teacher_completion_tokens,
            student_prompt_tokens=u.student_prompt_tokens,
            student_completion_tokens=u.student_completion_tokens,
            student_guidance_tokens=u.student_guidance_tokens,
            student_cached_prompt_tokens=u.student_cached_prompt_tokens,
            teacher_cached_prompt_tokens=u.teacher_cached_prompt_tokens,
        ),
        timings=edge_pb2.Timings(
            teacher_time_to_first_token_seconds=t.teacher_time_to_first_token_seconds,
            teacher_total_seconds=t.teacher_total_seconds,
            guidance_wait_seconds=t.guidance_wait_seconds,
            student_queue_seconds=t.student_queue_seconds,
            student_prefill_seconds=t.student_prefill_seconds,
            student_decode_seconds=t.student_decode_seconds,
            time_to_first_token_seconds=t.time_to_first_token_seconds,
            total_seconds=t.total_seconds,
            student_prompt_prefilled_seconds=t.student_prompt_prefilled_seconds,
        ),
    )


def answer_delta_to_pb(delta: AnswerDelta) -> edge_pb2.GenerateStreamChunk:
    return edge_pb2.GenerateStreamChunk(text_delta=delta.text, segment=_SEGMENT_TO_PB[delta.segment])


def server_info_to_pb(info: ServerInfo) -> common_pb2.ServerInfo:
    return common_pb2.ServerInfo(**dataclasses.asdict(info))


def server_info_from_pb(message: common_pb2.ServerInfo) -> ServerInfo:
    return ServerInfo(**{f.name: getattr(message, f.name) for f in dataclasses.fields(ServerInfo)})
