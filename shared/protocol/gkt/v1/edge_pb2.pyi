from shared.protocol.gkt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_GKT: _ClassVar[Mode]
    MODE_STUDENT_ONLY: _ClassVar[Mode]
    MODE_TEACHER_ONLY: _ClassVar[Mode]

class Segment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENT_UNSPECIFIED: _ClassVar[Segment]
    SEGMENT_GUIDANCE: _ClassVar[Segment]
    SEGMENT_STUDENT: _ClassVar[Segment]
    SEGMENT_VERIFIED: _ClassVar[Segment]
    SEGMENT_CORRECTION: _ClassVar[Segment]

class DegradedReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEGRADED_REASON_UNSPECIFIED: _ClassVar[DegradedReason]
    DEGRADED_REASON_UNAVAILABLE: _ClassVar[DegradedReason]
    DEGRADED_REASON_DEADLINE: _ClassVar[DegradedReason]
    DEGRADED_REASON_OVERLOADED: _ClassVar[DegradedReason]
    DEGRADED_REASON_UNAUTHORIZED: _ClassVar[DegradedReason]
    DEGRADED_REASON_ERROR: _ClassVar[DegradedReason]
    DEGRADED_REASON_CIRCUIT_OPEN: _ClassVar[DegradedReason]

class GuidanceEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUIDANCE_END_UNSPECIFIED: _ClassVar[GuidanceEnd]
    GUIDANCE_END_K_REACHED: _ClassVar[GuidanceEnd]
    GUIDANCE_END_STUDENT_AGREED: _ClassVar[GuidanceEnd]
    GUIDANCE_END_TEACHER_FINISHED: _ClassVar[GuidanceEnd]
    GUIDANCE_END_DEADLINE: _ClassVar[GuidanceEnd]
    GUIDANCE_END_TEACHER_FAILED: _ClassVar[GuidanceEnd]
MODE_UNSPECIFIED: Mode
MODE_GKT: Mode
MODE_STUDENT_ONLY: Mode
MODE_TEACHER_ONLY: Mode
SEGMENT_UNSPECIFIED: Segment
SEGMENT_GUIDANCE: Segment
SEGMENT_STUDENT: Segment
SEGMENT_VERIFIED: Segment
SEGMENT_CORRECTION: Segment
DEGRADED_REASON_UNSPECIFIED: DegradedReason
DEGRADED_REASON_UNAVAILABLE: DegradedReason
DEGRADED_REASON_DEADLINE: DegradedReason
DEGRADED_REASON_OVERLOADED: DegradedReason
DEGRADED_REASON_UNAUTHORIZED: DegradedReason
DEGRADED_REASON_ERROR: DegradedReason
DEGRADED_REASON_CIRCUIT_OPEN: DegradedReason
GUIDANCE_END_UNSPECIFIED: GuidanceEnd
GUIDANCE_END_K_REACHED: GuidanceEnd
GUIDANCE_END_STUDENT_AGREED: GuidanceEnd
GUIDANCE_END_TEACHER_FINISHED: GuidanceEnd
GUIDANCE_END_DEADLINE: GuidanceEnd
GUIDANCE_END_TEACHER_FAILED: GuidanceEnd

class EdgeInfo(_message.Message):
    __slots__ = ("edge", "teacher", "teacher_address")
    EDGE_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    TEACHER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    edge: _common_pb2.ServerInfo
    teacher: _common_pb2.ServerInfo
    teacher_address: str
    def __init__(self, edge: _Optional[_Union[_common_pb2.ServerInfo, _Mapping]] = ..., teacher: _Optional[_Union[_common_pb2.ServerInfo, _Mapping]] = ..., teacher_address: _Optional[str] = ...) -> None: ...

class GuidancePolicy(_message.Message):
    __slots__ = ("kind", "floor_tokens", "window", "min_top1_fraction", "min_mean_logprob", "escalate", "entropy_threshold", "entropy_run", "max_bursts", "burst_tokens", "draft_tokens", "acceptance", "min_teacher_prob", "draft_min_prob", "correction_tokens")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[GuidancePolicy.Kind]
        KIND_FIXED: _ClassVar[GuidancePolicy.Kind]
        KIND_ADAPTIVE: _ClassVar[GuidancePolicy.Kind]
        KIND_VERIFY: _ClassVar[GuidancePolicy.Kind]
    KIND_UNSPECIFIED: GuidancePolicy.Kind
    KIND_FIXED: GuidancePolicy.Kind
    KIND_ADAPTIVE: GuidancePolicy.Kind
    KIND_VERIFY: GuidancePolicy.Kind
    class Acceptance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACCEPTANCE_UNSPECIFIED: _ClassVar[GuidancePolicy.Acceptance]
        ACCEPTANCE_STRICT: _ClassVar[GuidancePolicy.Acceptance]
        ACCEPTANCE_MIN_TEACHER_PROB: _ClassVar[GuidancePolicy.Acceptance]
        ACCEPTANCE_SPECULATIVE: _ClassVar[GuidancePolicy.Acceptance]
    ACCEPTANCE_UNSPECIFIED: GuidancePolicy.Acceptance
    ACCEPTANCE_STRICT: GuidancePolicy.Acceptance
    ACCEPTANCE_MIN_TEACHER_PROB: GuidancePolicy.Acceptance
    ACCEPTANCE_SPECULATIVE: GuidancePolicy.Acceptance
    KIND_FIELD_NUMBER: _ClassVar[int]
    FLOOR_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MIN_TOP1_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_RUN_FIELD_NUMBER: _ClassVar[int]
    MAX_BURSTS_FIELD_NUMBER: _ClassVar[int]
    BURST_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_TEACHER_PROB_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MIN_PROB_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    kind: GuidancePolicy.Kind
    floor_tokens: int
    window: int
    min_top1_fraction: float
    min_mean_logprob: float
    escalate: bool
    entropy_threshold: float
    entropy_run: int
    max_bursts: int
    burst_tokens: int
    draft_tokens: int
    acceptance: GuidancePolicy.Acceptance
    min_teacher_prob: float
    draft_min_prob: float
    correction_tokens: int
    def __init__(self, kind: _Optional[_Union[GuidancePolicy.Kind, str]] = ..., floor_tokens: _Optional[int] = ..., window: _Optional[int] = ..., min_top1_fraction: _Optional[float] = ..., min_mean_logprob: _Optional[float] = ..., escalate: _Optional[bool] = ..., entropy_threshold: _Optional[float] = ..., entropy_run: _Optional[int] = ..., max_bursts: _Optional[int] = ..., burst_tokens: _Optional[int] = ..., draft_tokens: _Optional[int] = ..., acceptance: _Optional[_Union[GuidancePolicy.Acceptance, str]] = ..., min_teacher_prob: _Optional[float] = ..., draft_min_prob: _Optional[float] = ..., correction_tokens: _Optional[int] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("rounds", "draft_tokens", "accepted_tokens", "corrected_tokens", "teacher_scored_tokens", "teacher_passes", "teacher_prompt_tokens", "teacher_cached_prompt_tokens")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_PASSES_FIELD_NUMBER: _ClassVar[int]
    TEACHER_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    rounds: int
    draft_tokens: int
    accepted_tokens: int
    corrected_tokens: int
    teacher_scored_tokens: int
    teacher_passes: int
    teacher_prompt_tokens: int
    teacher_cached_prompt_tokens: int
    def __init__(self, rounds: _Optional[int] = ..., draft_tokens: _Optional[int] = ..., accepted_tokens: _Optional[int] = ..., corrected_tokens: _Optional[int] = ..., teacher_scored_tokens: _Optional[int] = ..., teacher_passes: _Optional[int] = ..., teacher_prompt_tokens: _Optional[int] = ..., teacher_cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class Burst(_message.Message):
    __slots__ = ("offset", "text", "teacher_tokens", "prompt_tokens", "cached_prompt_tokens")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEACHER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    offset: int
    text: str
    teacher_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    def __init__(self, offset: _Optional[int] = ..., text: _Optional[str] = ..., teacher_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "conversation", "system_prompt", "mode", "guidance_tokens", "max_tokens", "sampling", "continue_final_message", "guidance_policy")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_POLICY_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    conversation: _common_pb2.Conversation
    system_prompt: str
    mode: Mode
    guidance_tokens: int
    max_tokens: int
    sampling: _common_pb2.Sampling
    continue_final_message: bool
    guidance_policy: GuidancePolicy
    def __init__(self, prompt: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., system_prompt: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., guidance_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., continue_final_message: _Optional[bool] = ..., guidance_policy: _Optional[_Union[GuidancePolicy, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("teacher_prompt_tokens", "teacher_completion_tokens", "student_prompt_tokens", "student_completion_tokens", "student_guidance_tokens", "student_cached_prompt_tokens", "teacher_cached_prompt_tokens", "prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens")
    TEACHER_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_GUIDANCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    teacher_prompt_tokens: int
    teacher_completion_tokens: int
    student_prompt_tokens: int
    student_completion_tokens: int
    student_guidance_tokens: int
    student_cached_prompt_tokens: int
    teacher_cached_prompt_tokens: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int
    def __init__(self, teacher_prompt_tokens: _Optional[int] = ..., teacher_completion_tokens: _Optional[int] = ..., student_prompt_tokens: _Optional[int] = ..., student_completion_tokens: _Optional[int] = ..., student_guidance_tokens: _Optional[int] = ..., student_cached_prompt_tokens: _Optional[int] = ..., teacher_cached_prompt_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("teacher_time_to_first_token_seconds", "teacher_total_seconds", "guidance_wait_seconds", "student_queue_seconds", "student_prefill_seconds", "student_decode_seconds", "time_to_first_token_seconds", "total_seconds", "student_prompt_prefilled_seconds")
    TEACHER_TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_PREFILL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_PROMPT_PREFILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    teacher_time_to_first_token_seconds: float
    teacher_total_seconds: float
    guidance_wait_seconds: float
    student_queue_seconds: float
    student_prefill_seconds: float
    student_decode_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float
    student_prompt_prefilled_seconds: float
    def __init__(self, teacher_time_to_first_token_seconds: _Optional[float] = ..., teacher_total_seconds: _Optional[float] = ..., guidance_wait_seconds: _Optional[float] = ..., student_queue_seconds: _Optional[float] = ..., student_prefill_seconds: _Optional[float] = ..., student_decode_seconds: _Optional[float] = ..., time_to_first_token_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., student_prompt_prefilled_seconds: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "guidance_text", "student_text", "mode", "degraded", "degraded_reason", "finish_reason", "usage", "timings", "guidance_end", "bursts", "verification")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_TEXT_FIELD_NUMBER: _ClassVar[int]
    STUDENT_TEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_END_FIELD_NUMBER: _ClassVar[int]
    BURSTS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    guidance_text: str
    student_text: str
    mode: Mode
    degraded: bool
    degraded_reason: DegradedReason
    finish_reason: _common_pb2.FinishReason
    usage: Usage
    timings: Timings
    guidance_end: GuidanceEnd
    bursts: _containers.RepeatedCompositeFieldContainer[Burst]
    verification: Verification
    def __init__(self, text: _Optional[str] = ..., guidance_text: _Optional[str] = ..., student_text: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[_Union[DegradedReason, str]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., guidance_end: _Optional[_Union[GuidanceEnd, str]] = ..., bursts: _Optional[_Iterable[_Union[Burst, _Mapping]]] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ...) -> None: ...

class AnswerDelta(_message.Message):
    __slots__ = ("text", "segment")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    text: str
    segment: Segment
    def __init__(self, text: _Optional[str] = ..., segment: _Optional[_Union[Segment, str]] = ...) -> None: ...

class GenerateStreamChunk(_message.Message):
    __slots__ = ("delta", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: AnswerDelta
    final: GenerateResponse
    def __init__(self, delta: _Optional[_Union[AnswerDelta, _Mapping]] = ..., final: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...
