"""The adaptive policy's two decisions on made-up scores: has the student caught up, and is it unsure enough."""

from __future__ import annotations

from edge_student.guidance_policy import UncertaintyWatch, student_agrees
from shared.llama.scoring import TokenScore
from shared.protocol.domain import GuidancePolicy

ADAPTIVE = GuidancePolicy(kind="adaptive", floor_tokens=2, window=3, min_top1_fraction=1.0, min_mean_logprob=-1.0)


def scores(*tokens: tuple[float, bool]) -> list[TokenScore]:
    return [TokenScore(position, logprob, top1) for position, (logprob, top1) in enumerate(tokens)]


def test_agreement_is_judged_on_the_last_window_only() -> None:
    early_miss = scores((-5.0, False), (-0.1, True), (-0.2, True), (-0.3, True))
    assert student_agrees(ADAPTIVE, early_miss)  # the miss fell out of the window
    assert not student_agrees(ADAPTIVE, early_miss[:3])  # ... but counts while inside it


def test_too_few_scored_tokens_never_agree() -> None:
    assert not student_agrees(ADAPTIVE, scores((-0.1, True), (-0.1, True)))


def test_both_the_top1_share_and_the_mean_logprob_must_hold() -> None:
    unsure_top1 = scores((-1.5, True), (-1.5, True), (-1.5, True))  # its first choices, but at low probability
    assert not student_agrees(ADAPTIVE, unsure_top1)
    relaxed = GuidancePolicy(kind="adaptive", window=3, min_top1_fraction=2 / 3, min_mean_logprob=-2.0)
    assert student_agrees(relaxed, unsure_top1)
    assert student_agrees(relaxed, scores((-1.0, False), (-0.5, True), (-0.5, True)))
    assert not student_agrees(relaxed, scores((-1.0, False), (-0.5, False), (-0.5, True)))


def test_a_burst_is_due_after_a_run_of_unsure_tokens_and_no_more_than_allowed() -> None:
    policy = GuidancePolicy(escalate=True, entropy_threshold=2.0, entropy_run=2, max_bursts=1)
    watch = UncertaintyWatch(policy)
    entropies = [3.0, 1.0, 3.0]
    assert not watch.wants_burst(entropies)  # a sure token broke the run
    entropies.append(2.5)
    assert watch.wants_burst(entropies)
    watch.burst_taken()
    entropies += [3.0, 3.0, 3.0]
    assert not watch.wants_burst(entropies) and watch.bursts == 1  # the cap


def test_no_burst_without_escalation() -> None:
    watch = UncertaintyWatch(GuidancePolicy(escalate=False, entropy_threshold=0.0, entropy_run=1))
    assert not watch.wants_burst([5.0, 5.0, 5.0])
