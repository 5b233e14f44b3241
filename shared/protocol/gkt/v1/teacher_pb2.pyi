from shared.protocol.gkt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuidanceRequest(_message.Message):
    __slots__ = ("prompt", "conversation", "system_prompt", "max_tokens", "sampling", "continue_final_message")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    conversation: _common_pb2.Conversation
    system_prompt: str
    max_tokens: int
    sampling: _common_pb2.Sampling
    continue_final_message: bool
    def __init__(self, prompt: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., system_prompt: _Optional[str] = ..., max_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., continue_final_message: _Optional[bool] = ...) -> None: ...

class TeacherUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class TeacherTimings(_message.Message):
    __slots__ = ("queue_seconds", "time_to_first_token_seconds", "total_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., time_to_first_token_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class GuidanceDelta(_message.Message):
    __slots__ = ("text", "usage")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    usage: TeacherUsage
    def __init__(self, text: _Optional[str] = ..., usage: _Optional[_Union[TeacherUsage, _Mapping]] = ...) -> None: ...

class GuidanceDone(_message.Message):
    __slots__ = ("usage", "finish_reason", "timings")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    usage: TeacherUsage
    finish_reason: _common_pb2.FinishReason
    timings: TeacherTimings
    def __init__(self, usage: _Optional[_Union[TeacherUsage, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., timings: _Optional[_Union[TeacherTimings, _Mapping]] = ...) -> None: ...

class GuidanceChunk(_message.Message):
    __slots__ = ("delta", "done")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    delta: GuidanceDelta
    done: GuidanceDone
    def __init__(self, delta: _Optional[_Union[GuidanceDelta, _Mapping]] = ..., done: _Optional[_Union[GuidanceDone, _Mapping]] = ...) -> None: ...

class Acceptance(_message.Message):
    __slots__ = ("rule", "min_teacher_prob", "draft_pieces")
    class Rule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RULE_UNSPECIFIED: _ClassVar[Acceptance.Rule]
        RULE_STRICT: _ClassVar[Acceptance.Rule]
        RULE_MIN_TEACHER_PROB: _ClassVar[Acceptance.Rule]
        RULE_SPECULATIVE: _ClassVar[Acceptance.Rule]
    RULE_UNSPECIFIED: Acceptance.Rule
    RULE_STRICT: Acceptance.Rule
    RULE_MIN_TEACHER_PROB: Acceptance.Rule
    RULE_SPECULATIVE: Acceptance.Rule
    RULE_FIELD_NUMBER: _ClassVar[int]
    MIN_TEACHER_PROB_FIELD_NUMBER: _ClassVar[int]
    DRAFT_PIECES_FIELD_NUMBER: _ClassVar[int]
    rule: Acceptance.Rule
    min_teacher_prob: float
    draft_pieces: _containers.RepeatedCompositeFieldContainer[DraftPiece]
    def __init__(self, rule: _Optional[_Union[Acceptance.Rule, str]] = ..., min_teacher_prob: _Optional[float] = ..., draft_pieces: _Optional[_Iterable[_Union[DraftPiece, _Mapping]]] = ...) -> None: ...

class DraftPiece(_message.Message):
    __slots__ = ("start", "end", "probability")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    probability: float
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("prompt", "conversation", "system_prompt", "continue_final_message", "accepted_text", "draft_text", "acceptance", "correction_tokens", "sampling")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TEXT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TEXT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    conversation: _common_pb2.Conversation
    system_prompt: str
    continue_final_message: bool
    accepted_text: str
    draft_text: str
    acceptance: Acceptance
    correction_tokens: int
    sampling: _common_pb2.Sampling
    def __init__(self, prompt: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., system_prompt: _Optional[str] = ..., continue_final_message: _Optional[bool] = ..., accepted_text: _Optional[str] = ..., draft_text: _Optional[str] = ..., acceptance: _Optional[_Union[Acceptance, _Mapping]] = ..., correction_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ...) -> None: ...

class DraftToken(_message.Message):
    __slots__ = ("start", "end", "logprob", "top1", "accepted")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP1_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    logprob: float
    top1: bool
    accepted: bool
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., logprob: _Optional[float] = ..., top1: _Optional[bool] = ..., accepted: _Optional[bool] = ...) -> None: ...

class VerifyUsage(_message.Message):
    __slots__ = ("prompt_tokens", "cached_prompt_tokens", "scored_tokens", "generated_tokens", "passes")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PASSES_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    cached_prompt_tokens: int
    scored_tokens: int
    generated_tokens: int
    passes: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., scored_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., passes: _Optional[int] = ...) -> None: ...

class VerifyTimings(_message.Message):
    __slots__ = ("queue_seconds", "total_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    total_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("accepted_chars", "correction_text", "ended", "finish_reason", "tokens", "usage", "timings")
    ACCEPTED_CHARS_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_TEXT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    accepted_chars: int
    correction_text: str
    ended: bool
    finish_reason: _common_pb2.FinishReason
    tokens: _containers.RepeatedCompositeFieldContainer[DraftToken]
    usage: VerifyUsage
    timings: VerifyTimings
    def __init__(self, accepted_chars: _Optional[int] = ..., correction_text: _Optional[str] = ..., ended: _Optional[bool] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., tokens: _Optional[_Iterable[_Union[DraftToken, _Mapping]]] = ..., usage: _Optional[_Union[VerifyUsage, _Mapping]] = ..., timings: _Optional[_Union[VerifyTimings, _Mapping]] = ...) -> None: ...
