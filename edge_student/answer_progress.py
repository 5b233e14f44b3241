"""An edge answer's records as the flow puts it together: each teacher call, and the answer's progress."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge_student.answer_budget import AnswerBudget
from edge_student.teacher_client import TeacherUnavailableError
from shared.protocol.domain import Burst, GuidanceDelta, GuidanceDone, GuidanceEnd, Verification
from shared.protocol.verification import VerifyUsage


@dataclass
class TeacherCall:
    """What one teacher request delivered (the guidance, a continuation of it, or a burst)."""

    text: str = ""
    done: GuidanceDone | None = None
    last: GuidanceDelta | None = None  # token counts so far, for a request stopped before its end
    failure: TeacherUnavailableError | None = None
    burst: bool = False  # a burst the student asked for while writing (not the guidance)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float = 0.0

    @property
    def teacher_finished(self) -> bool:
        return self.done is not None and self.done.finish_reason == "stop"


@dataclass
class Progress:
    """An answer as it is put together: the teacher's calls, the text, the bursts, the budget they share."""

    budget: AnswerBudget
    calls: list[TeacherCall] = field(default_factory=list)
    guidance_text: str = ""
    student_text: str = ""  # everything after the guidance, bursts included
    bursts: list[Burst] = field(default_factory=list)
    end: GuidanceEnd | None = None
    failure: TeacherUnavailableError | None = None
    first_output_at: float = 0.0
    # The verify policy: what its rounds did, each Verify call's usage, the student tokens drafted (rejected too).
    verification: Verification | None = None
    verify_usage: list[VerifyUsage] = field(default_factory=list)
    verify_seconds: float = 0.0  # the teacher's own time on the Verify calls
    drafted_tokens: int = 0

    def output(self) -> None:
        self.first_output_at = self.first_output_at or time.monotonic()
