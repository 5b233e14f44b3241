"""The acceptance rules of teacher-verified drafting as pure logic (fast: no model, no server)."""

from __future__ import annotations

import math
import random

from cloud_teacher.acceptance import (
    Decision,
    TeacherPosition,
    accepted_chars,
    apply_stops,
    decide,
    residual,
    scored_tokens,
    seeded_rng,
    student_probabilities,
    teacher_distribution,
)
from shared.protocol.domain import Sampling
from shared.protocol.verification import Acceptance, DraftPiece

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=None)
WARM = Sampling(temperature=1.0, top_p=1.0, seed=7)
STRICT = Acceptance()


def position(token: int, start: int, end: int, probs: dict[int, float]) -> TeacherPosition:
    """A teacher position whose top choices are `probs` (token -> probability), best first."""
    top = tuple((t, math.log(p)) for t, p in sorted(probs.items(), key=lambda item: -item[1]))
    return TeacherPosition(token, start, end, math.log(probs.get(token, 1e-9)), top)


# A draft of four teacher tokens, "a", "bb", "c", "dd": the teacher's top choice is 1, 2, 9 (not 3), 4.
DRAFT = "abbcdd"
POSITIONS = [
    position(1, 0, 1, {1: 0.9, 5: 0.1}),
    position(2, 1, 3, {2: 0.6, 6: 0.4}),
    position(3, 3, 4, {9: 0.7, 3: 0.3}),
    position(4, 4, 6, {4: 0.99, 7: 0.01}),
]


def test_strict_keeps_the_teachers_top_choices_up_to_the_first_other_token() -> None:
    decision = decide(POSITIONS, STRICT, GREEDY, random.Random(0))
    assert decision == Decision(accepted=2, correction=9)
    assert accepted_chars(POSITIONS, decision, len(DRAFT)) == 3  # "abb" stands, "c" onwards is rolled back
    flags = [(t.top1, t.accepted) for t in scored_tokens(POSITIONS, decision)]
    assert flags == [(True, True), (True, True), (False, False), (True, False)]


def test_strict_accepts_a_draft_of_top_choices_whole_and_leaves_the_next_token_to_generation() -> None:
    own = [POSITIONS[0], POSITIONS[1], POSITIONS[3]]
    decision = decide(own, STRICT, GREEDY, random.Random(0))
    assert decision == Decision(accepted=3, correction=None)
    assert accepted_chars(own, decision, 42) == 42


def test_min_teacher_prob_keeps_what_the_teacher_gives_at_least_tau() -> None:
    assert decide(POSITIONS, Acceptance("min_teacher_prob", 0.25), GREEDY, random.Random(0)) == Decision(4, None)
    # At 0.5 the third token (0.3) is rejected and the teacher's top choice replaces it.
    assert decide(POSITIONS, Acceptance("min_teacher_prob", 0.5), GREEDY, random.Random(0)) == Decision(2, 9)


def test_min_teacher_prob_always_keeps_the_teachers_own_top_choice() -> None:
    # Above every probability here, so only top choices stand: the same verdict as strict, never a token replaced
    # by itself.
    assert decide(POSITIONS, Acceptance("min_teacher_prob", 1.0), GREEDY, random.Random(0)) == Decision(2, 9)


def test_speculative_at_temperature_zero_is_strict() -> None:
    q = [0.5] * len(POSITIONS)
    assert decide(POSITIONS, Acceptance("speculative"), GREEDY, random.Random(0), q) == Decision(2, 9)


def test_speculative_keeps_a_token_the_teacher_likes_more_than_the_student() -> None:
    # p >= q everywhere: min(1, p/q) = 1, every token stands whatever the draws.
    q = [0.1, 0.1, 0.1, 0.1]
    for seed in range(20):
        assert decide(POSITIONS, Acceptance("speculative"), WARM, random.Random(seed), q) == Decision(4, None)


def test_speculative_acceptance_follows_p_over_q_and_is_deterministic_under_a_seed() -> None:
    only = [position(3, 0, 1, {9: 0.7, 3: 0.3})]
    q = [0.6]  # accept with probability 0.3 / 0.6 = 0.5
    outcomes = [decide(only, Acceptance("speculative"), WARM, random.Random(seed), q) for seed in range(2000)]
    share = sum(o.accepted for o in outcomes) / len(outcomes)
    assert 0.45 < share < 0.55
    # On rejection the residual max(0, p - q) has mass only on token 9 (0.3 - 0.6 < 0).
    assert {o.correction for o in outcomes if not o.accepted} == {9}
    seeded = Sampling(temperature=1.0, top_p=1.0, seed=1234)
    first = decide(only, Acceptance("speculative"), seeded, seeded_rng(seeded, 10), q)
    assert all(decide(only, Acceptance("speculative"), seeded, seeded_rng(seeded, 10), q) == first for _ in range(5))


def test_speculative_output_follows_the_teachers_distribution() -> None:
    """The point of the rule: draft + accept/resample gives tokens distributed as the teacher's p, whatever q."""
    teacher = {1: 0.5, 2: 0.3, 3: 0.2}
    student = {1: 0.2, 2: 0.7, 3: 0.1}  # the student drafts from its own distribution
    rng = random.Random(99)
    counts = dict.fromkeys(teacher, 0)
    trials = 20_000
    for _ in range(trials):
        drafted = rng.choices(list(student), weights=list(student.values()))[0]
        at = position(drafted, 0, 1, teacher)
        # Only the drafted token's q is sent: the residual is exact when the student's q elsewhere is below p, as
        # here for tokens 1 and 3 when 2 is drafted.
        decision = decide([at], Acceptance("speculative"), WARM, rng, [student[drafted]])
        written = drafted if decision.accepted else decision.correction
        assert written is not None
        counts[written] += 1
    for token, p in teacher.items():
        assert abs(counts[token] / trials - p) < 0.06, (token, counts[token] / trials)


def test_the_teacher_distribution_applies_temperature_and_top_p_over_its_top_choices() -> None:
    at = position(3, 0, 1, {1: 0.6, 2: 0.3, 3: 0.1})
    flat = teacher_distribution(at, Sampling(temperature=1.0, top_p=1.0, seed=None))
    assert abs(flat[1] - 0.6) < 1e-9 and abs(flat[3] - 0.1) < 1e-9
    sharp = teacher_distribution(at, Sampling(temperature=0.5, top_p=1.0, seed=None))
    assert sharp[1] > 0.6 and abs(sum(sharp.values()) - 1.0) < 1e-9
    nucleus = teacher_distribution(at, Sampling(temperature=1.0, top_p=0.8, seed=None))
    assert set(nucleus) == {1, 2} and abs(nucleus[1] - 0.6 / 0.9) < 1e-9


def test_the_residual_falls_back_to_the_top_choice_when_nothing_is_left() -> None:
    at = position(1, 0, 1, {1: 1.0})
    assert residual(at, 1.0, WARM, random.Random(0)) == 1


def test_student_probabilities_map_pieces_to_teacher_tokens_by_where_they_end() -> None:
    # Teacher tokens "a" [0,1), "bb" [1,3), "c" [3,4), "dd" [4,6); the student split the draft "a","b","bc","dd".
    pieces = [DraftPiece(0, 1, 0.5), DraftPiece(1, 2, 0.4), DraftPiece(2, 4, 0.25), DraftPiece(4, 6, 0.8)]
    q = student_probabilities(POSITIONS, pieces)
    assert q == [0.5, 0.4, 0.25, 0.8]  # "bc" ends in teacher token "c"; "bb" gets "b" only
    assert math.prod(q) == math.prod(p.probability for p in pieces)


def test_a_stop_sequence_in_the_kept_draft_ends_the_answer_before_it() -> None:
    ending = apply_stops("Q: x\nA: 12", " dollars\nQ: next", 16, "", False, ("\nQ:",))
    assert (ending.accepted_chars, ending.correction_text, ending.ended) == (8, "", True)


def test_a_stop_sequence_in_the_correction_cuts_the_correction() -> None:
    ending = apply_stops("A: 12", " dollars", 8, ".\nQ:", False, ("\nQ:",))
    assert (ending.accepted_chars, ending.correction_text, ending.ended) == (8, ".", True)


def test_a_stop_sequence_spanning_the_accepted_text_and_the_draft_ends_the_answer_at_once() -> None:
    ending = apply_stops("The answer is 5.\n", "Q: what", 7, "", False, ("\nQ:",))
    assert (ending.accepted_chars, ending.correction_text, ending.ended) == (0, "", True)


def test_a_stop_sequence_wholly_in_the_accepted_text_is_not_new() -> None:
    ending = apply_stops("A\nQ: b", " c", 2, " d", False, ("\nQ:",))
    assert (ending.accepted_chars, ending.correction_text, ending.ended) == (2, " d", False)
    assert apply_stops("x", "y", 1, "", True, ()).ended
