"""The teacher-only counterfactual of an answer with bursts, checked by hand."""

from __future__ import annotations

import pytest

from edge_student.accounting import teacher_only_cost
from shared.pricing import Prices, TokenPrices
from shared.protocol.domain import Answer, Burst, Timings, Usage

# Round prices so the hand computation is easy: 1 per prompt token, 0.5 per cached one, 2 per generated one.
PRICES = Prices(teacher=TokenPrices(1000.0, 2000.0, 500.0), student=TokenPrices(100.0, 100.0, 10.0))


def test_bursts_reread_the_prompt_but_a_teacher_only_answer_reads_it_once() -> None:
    # The guidance call read a 100-token prompt (60 cached) and wrote 40 tokens; two bursts re-read the prompt
    # and the answer so far (150 and 190 tokens, 100 and 140 cached) and wrote 4 tokens each; the student wrote 50.
    bursts = (
        Burst(offset=120, text=" one", teacher_tokens=4, prompt_tokens=150, cached_prompt_tokens=100),
        Burst(offset=200, text=" two", teacher_tokens=4, prompt_tokens=190, cached_prompt_tokens=140),
    )
    usage = Usage(
        teacher_prompt_tokens=100 + 150 + 190,
        teacher_completion_tokens=40 + 4 + 4,
        teacher_cached_prompt_tokens=60 + 100 + 140,
        student_prompt_tokens=130,
        student_completion_tokens=50,
        student_guidance_tokens=48,
    )
    answer = Answer("guidance", "student", "gkt", "stop", usage, Timings(), guidance_end="k_reached", bursts=bursts)
    # Teacher-only: the prompt once (40 uncached, 60 cached), and the whole answer's 98 tokens generated.
    assert teacher_only_cost(answer, PRICES) == pytest.approx(40 * 1 + 60 * 0.5 + 98 * 2)
