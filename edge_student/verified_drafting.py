"""Teacher-verified drafting (the `verify` policy): the student drafts, the teacher checks each draft in one pass.

Rounds after the guidance (K teacher tokens, 0 allowed): the student drafts `draft_tokens` tokens (its sequence
pauses there, or where it would end the answer); `TeacherClient.verify` says how many characters of the draft stand
and what the teacher writes instead; the student's sequence is rolled back by characters to the accepted text (its
last token boundary at or before it; the rest is prefilled again as text, so the tokenizers may differ) and the
correction is appended; the next draft starts from there. Only checked text reaches the client: the accepted
draft as `verified`, the teacher's text as `correction`. The answer ends where the teacher says it ends (a student
end the teacher confirms) or at `max_tokens` (the whole answer, student tokens).

A teacher that fails or cannot verify (UNIMPLEMENTED) leaves the answer to the student: the draft in hand is sent
unverified (`student`), and the caller lets the student write the rest as in GKT mode (the answer is degraded).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from edge_student.answer_budget import BudgetedText
from edge_student.answer_progress import Progress, TeacherCall
from edge_student.circuit_breaker import CircuitBreaker
from edge_student.teacher_client import TeacherClient, TeacherUnavailableError
from shared.llama.engine import EngineSequence
from shared.prompt_formats import RenderedPrompt
from shared.protocol.domain import AnswerDelta, GenerateParams, PromptInput, Verification
from shared.protocol.verification import Acceptance, DraftPiece, VerifyParams, VerifyResult

# One teacher call of the flow's, `tokens` long, continuing `input`, recorded in the call (and the answer's calls).
StreamCall = Callable[[PromptInput, int, TeacherCall], AsyncGenerator[str, None]]

# The least probability a draft piece is sent with (the teacher wants (0, 1]; a product of many small ones can
# underflow to 0).
_MIN_PIECE_PROBABILITY = 1e-30


class VerifiedDrafting:
    """One answer's rounds of draft and verify; `open_for_student` afterwards: the teacher failed and the student
    writes the rest unverified (its prompt is open, holding the answer so far)."""

    def __init__(
        self,
        teacher: TeacherClient,
        breaker: CircuitBreaker,
        stream_call: StreamCall,
        params: GenerateParams,
        sequence: EngineSequence,
        rendered: RenderedPrompt,
        progress: Progress,
        deadline: float | None,
    ) -> None:
        self._teacher, self._breaker, self._stream_call = teacher, breaker, stream_call
        self._params = params
        self._sequence = sequence
        self._rendered = rendered
        self._progress = progress
        self._deadline = deadline
        self.checks = progress.verification = Verification()
        self.open_for_student = False
        self._part: BudgetedText = progress.budget.text()  # the drafted answer: verified text and corrections

    @property
    def _answer(self) -> str:
        return self._progress.guidance_text + self._progress.student_text

    async def rounds(self) -> AsyncGenerator[AnswerDelta, None]:
        """Drafts, verifies and commits until the answer ends, `max_tokens` is reached or the teacher fails."""
        policy, sequence, part = self._params.policy, self._sequence, self._part
        while True:
            left = part.limit - part.tokens
            if left <= 0:
                self._progress.budget.capped = True
                return
            sequence.draft(min(policy.draft_tokens, left))
            draft = ""
            async for text in sequence.stream():
                draft += text
                if policy.draft_min_prob > 0 and _unsure(sequence, policy.draft_min_prob):
                    sequence.pause()  # adaptive draft length: the teacher checks from here on anyway
            if sequence.result is not None:  # out of context or failed: the unchecked draft is dropped
                return
            pieces = [(text, max(p, _MIN_PIECE_PROBABILITY)) for text, p in sequence.draft_pieces]
            if not draft:
                if not sequence.ended:
                    return  # nothing drafted and no end (cannot happen short of an engine fault): stop here
                correction = await self._confirm_end()
                if correction is None:
                    return
                if correction:
                    yield AnswerDelta(correction, "correction")
                continue
            verdict = await self._verify(draft, pieces)
            if verdict is None:  # the teacher failed: the draft goes out unverified, the student goes on alone
                async for delta in self._unverified(draft):
                    yield delta
                return
            async for delta in self._commit(draft, pieces, verdict):
                yield delta
            if part.cut:
                self._progress.budget.capped = True
                return
            if verdict.ended:
                return

    async def _verify(self, draft: str, pieces: list[tuple[str, float]]) -> VerifyResult | None:
        """The teacher's verdict; None after a failure (recorded as the answer's degraded reason)."""
        params, policy = self._params, self._params.policy
        if not self._breaker.allow():
            self._progress.failure = TeacherUnavailableError("circuit_open", "the teacher failed repeatedly")
            return None
        acceptance = Acceptance(rule=policy.acceptance, min_teacher_prob=policy.min_teacher_prob)
        if policy.acceptance == "speculative":
            spans, start = [], 0
            for text, probability in pieces:
                spans.append(DraftPiece(start, start + len(text), probability))
                start += len(text)
            acceptance = Acceptance(rule="speculative", draft_pieces=tuple(spans))
        request = VerifyParams(
            input=params.input,
            accepted_text=self._answer,
            draft_text=draft,
            sampling=params.sampling,
            acceptance=acceptance,
            correction_tokens=policy.correction_tokens,
        )
        time_left = None if self._deadline is None else self._deadline - time.monotonic()
        try:
            verdict = await self._teacher.verify(request, params.mode, time_left)
        except TeacherUnavailableError as failure:
            if failure.teacher_at_fault:  # UNIMPLEMENTED, a caller's deadline: not the teacher's health
                self._breaker.record_failure()
            self._progress.failure = failure
            return None
        self._breaker.record_success()
        checks, usage = self.checks, verdict.usage
        checks.rounds += 1
        checks.teacher_scored_tokens += usage.scored_tokens
        checks.teacher_passes += usage.passes
        checks.corrected_tokens += usage.generated_tokens
        checks.teacher_prompt_tokens += usage.prompt_tokens
        checks.teacher_cached_prompt_tokens += usage.cached_prompt_tokens
        self._progress.verify_usage.append(usage)
        self._progress.verify_seconds += (
            verdict.timings.total_seconds
        )  # the flow's own calls (the end's check) count themselves
        return verdict

    async def _commit(
        self, draft: str, pieces: list[tuple[str, float]], verdict: VerifyResult
    ) -> AsyncGenerator[AnswerDelta, None]:
        """The accepted part of the draft and the correction: to the client, and into the student's sequence in
        place of the draft (rolled back by characters)."""
        accepted = max(0, min(verdict.accepted_chars, len(draft)))
        self.checks.draft_tokens += len(pieces)
        end = 0
        for text, _ in pieces:
            end += len(text)
            self.checks.accepted_tokens += end <= accepted
        kept = self._part.take(draft[:accepted])
        correction = self._part.take(verdict.correction_text)
        self._sequence.rewrite(len(draft) - len(kept), self._for_student(kept, correction))
        progress = self._progress
        if kept:
            progress.output()
            progress.student_text += kept
            yield AnswerDelta(kept, "verified")
        if correction:
            progress.output()
            progress.student_text += correction
            yield AnswerDelta(correction, "correction")

    def _for_student(self, kept: str, correction: str) -> str:
        """A chat turn starts without the teacher's leading white space (as the guidance does)."""
        if self._rendered.strip_guidance_start and not (self._answer + kept).strip():
            return correction.lstrip()
        return correction

    async def _confirm_end(self) -> str | None:
        """The student would end the answer right after checked text: one teacher token says whether the teacher
        ends there too (None) or goes on (its token is the correction, returned, and the student drafts on)."""
        call = TeacherCall(burst=True)  # not guidance: its wait is not the guidance's
        progress = self._progress
        continued = self._params.input.continued(self._answer)
        text = ""
        async for delta in self._stream_call(continued, 1, call):
            text += delta
        counts = call.done or call.last
        if counts is not None:
            self.checks.corrected_tokens += counts.completion_tokens
            self.checks.teacher_prompt_tokens += counts.prompt_tokens
            self.checks.teacher_cached_prompt_tokens += counts.cached_prompt_tokens
        if call.failure is not None:  # the student's end stands, unconfirmed
            progress.failure = call.failure
            return None
        if not text:
            return None
        correction = self._part.take(text)
        self._sequence.rewrite(0, self._for_student("", correction))
        if correction:
            progress.output()
            progress.student_text += correction
        if self._part.cut:
            progress.budget.capped = True
            return None
        return correction

    async def _unverified(self, draft: str) -> AsyncGenerator[AnswerDelta, None]:
        """After a teacher failure: the draft goes out as the student's; the student writes on unless it ended."""
        kept = self._part.take(draft)
        self._sequence.rewrite(len(draft) - len(kept), "")
        if kept:
            self._progress.output()
            self._progress.student_text += kept
            yield AnswerDelta(kept, "student")
        if self._part.cut:
            self._progress.budget.capped = True
        elif not self._sequence.ended:
            self.open_for_student = True


def _unsure(sequence: EngineSequence, threshold: float) -> bool:
    """The latest drafted piece is one the student gave less than `threshold`."""
    return bool(sequence.draft_pieces) and sequence.draft_pieces[-1][1] < threshold
