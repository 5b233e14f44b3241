"""Answer extraction on known cases: GSM8K numbers, CSQA letters and option texts; unparsed answers score wrong."""

from __future__ import annotations

from decimal import Decimal

import pytest

from benchmarks.answers import extract_csqa, extract_gsm8k, judge, parse_number
from benchmarks.datasets import Example

CHOICES = (("A", "bank"), ("B", "fruit stand"), ("C", "a house"), ("D", "garage"), ("E", "food"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Natalia sold 48/2 = 24 clips in May. The answer is 72.", "72"),
        (" The answer is 1,200.", "1200"),
        (" The answer is 1,234,567", "1234567"),
        (" She earned $10. The answer is $10.", "10"),
        (" The answer is $1,200.50.", "1200.50"),
        (" The answer is 0.5 hours.", "0.5"),
        (" The answer is .75", "0.75"),
        (" The answer is 50%.", "50"),
        (" The answer is 12, since 3 * 4 = 12.", "12"),
        (" The answer is 72.0", "72"),
        (" The answer is -5.", "-5"),
        (" The answer is −5", "-5"),
        (" The answer is $-3", "-3"),
        (" The answer is -$3", "-3"),
        (" the answer is: 18 eggs", "18"),
        (" The answer is **42**.", "42"),
        (" So the final answer is 7", "7"),
        # The last answer the model states counts; an answer phrase cut off by the token limit does not erase it.
        (" The answer is 3. Wait, 4 + 4 = 8. The answer is 8.", "8"),
        (" The answer is 5. The answer is", "5"),
        # A new question written by the model is not part of its answer.
        (" The answer is 6.\nQ: Tom has 3 apples. The answer is 9.", "6"),
    ],
)
def test_gsm8k_number_after_the_answer_phrase(text: str, expected: str) -> None:
    assert extract_gsm8k(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " He has 5 apples and buys 3 more, so he has 8 apples.",  # no answer phrase: the last number is not taken
        " The answer is",  # cut off by the token limit
        " The answer is eight.",
        " The answer is unknown, maybe 5.",
        " The answer is 1,20.",  # not a well-formed number: not read as 1 or 120
        " The answer is 3/4 of the cake.",  # a fraction is not read as 3
        " The answer isn't 5.",
        " Tom has 3.\nQ: The answer is 4.",  # the phrase only appears in a question the model made up
    ],
)
def test_gsm8k_without_a_stated_number_is_unparsed(text: str) -> None:
    assert extract_gsm8k(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("72", "72"), ("1,000", "1000"), ("$5", "5"), ("-3.50", "-3.5"), (" 18 ", "18"), ("12 eggs", None), ("", None)],
)
def test_parse_number_of_gold_answers(text: str, expected: str | None) -> None:
    assert parse_number(text) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Fresh fruit is sold at a fruit stand. So the answer is (B).", "B"),
        (" So the answer is (b).", "B"),
        (" So the answer is ( D ).", "D"),
        (" So the answer is B.", "B"),
        (" so the answer is e", "E"),
        (" The answer is A) bank", "A"),
        (" So the answer is **(C)**.", "C"),
        (" So the answer is fruit stand.", "B"),
        (" So the answer is Fruit Stand", "B"),
        (" So the answer is a bank.", "A"),  # "a" is an article here, and "bank" is option A's text
        (" So the answer is the garage.", "D"),
        (" So the answer is house.", "C"),  # the option "a house", up to its article
        (" So the answer is a.", "A"),
        (" So the answer is (A). Hmm, no: so the answer is (E).", "E"),
        (" So the answer is (C).\nQ: Where? So the answer is (A).", "C"),
    ],
)
def test_csqa_letter_or_option_text(text: str, expected: str) -> None:
    assert extract_csqa(text, CHOICES) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " A fruit stand sells fruit.",  # names an option but never says it is the answer
        " So the answer is",
        " So the answer is (F).",  # not one of the choices
        " So the answer is stand.",  # part of an option's text is not the option
        " So the answer is B fruit stand",  # a bare letter followed by more words is not read as a letter
        " So the answer is a fruit stall.",
        " (B)",
    ],
)
def test_csqa_without_a_stated_option_is_unparsed(text: str) -> None:
    assert extract_csqa(text, CHOICES) is None


def test_unparsed_answers_count_as_wrong_never_as_a_guess() -> None:
    gsm8k = Example(id="1", question="q", gold="1,000")
    assert judge("gsm8k", " The answer is 1000.", gsm8k).outcome == "correct"
    assert judge("gsm8k", " The answer is 1000.00", gsm8k).outcome == "correct"
    assert judge("gsm8k", " The answer is 999.", gsm8k).outcome == "wrong"
    unparsed = judge("gsm8k", " So 1000 it is.", gsm8k)
    assert unparsed.outcome == "unparsed" and unparsed.extracted is None

    csqa = Example(id="2", question="q", gold="B", choices=CHOICES)
    assert judge("csqa", " So the answer is (B).", csqa).outcome == "correct"
    assert judge("csqa", " So the answer is (A).", csqa).outcome == "wrong"
    assert judge("csqa", " I am not sure.", csqa) == judge("csqa", "", csqa)
    assert judge("csqa", " I am not sure.", csqa).outcome == "unparsed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Chat models state the result in LaTeX, after the answer phrase or alone.
        ("She has 9 * 2 = 18 dollars.\n\nThe answer is \\(\\boxed{18}\\).", "18"),
        ("Total: $1,200.\n\nThe answer is $\\boxed{1,200}$", "1200"),
        ("So she pays \\[\\boxed{\\$45}\\]", "45"),
        ("\\boxed{1{,}500}", "1500"),
        ("The answer is \\boxed{72 \\text{ clips}}.", "72"),
        ("\\boxed{-3}", "-3"),
        # The last marker counts, boxed or not.
        ("The answer is 5. On second thought, \\boxed{6}", "6"),
        ("First \\boxed{5}; so the answer is 7.", "7"),
    ],
)
def test_gsm8k_boxed_answers(text: str, expected: str) -> None:
    assert extract_gsm8k(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text",
    [
        "The answer is \\(\\boxed{18",  # cut off by the token limit inside the box: nothing stated
        "The answer is \\(\\boxed{\\frac{3}{4}}\\)",  # a fraction is not read as 3
        "\\boxed{}",
        "\\boxed{x + 1}",
    ],
)
def test_gsm8k_incomplete_or_non_numeric_boxes_are_unparsed(text: str) -> None:
    assert extract_gsm8k(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fruit is sold at a fruit stand.\n\nSo the answer is \\(\\boxed{B}\\).", "B"),
        ("\\boxed{(d)}", "D"),
        ("The answer is \\boxed{\\text{E}}", "E"),
        ("\\boxed{\\text{fruit stand}}", "B"),
    ],
)
def test_csqa_boxed_answers(text: str, expected: str) -> None:
    assert extract_csqa(text, CHOICES) == expected


@pytest.mark.parametrize("text", ["\\boxed{F}", "\\boxed{B fruit stand}", "So the answer is \\boxed{(B"])
def test_csqa_boxes_without_an_option_are_unparsed(text: str) -> None:
    assert extract_csqa(text, CHOICES) is None
