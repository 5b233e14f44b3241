"""Answer extraction that never guesses: the answer the model states after "answer is" or in `\\boxed{...}`, or
unparsed (wrong)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from benchmarks.datasets import Dataset, Example

Outcome = Literal["correct", "wrong", "unparsed"]

# "The answer is", "So the answer is", "the final answer is" (not "answer isn't").
_ANSWER_IS = re.compile(r"\banswer\s+is\b", re.IGNORECASE)
# A number as written: thousands separated by commas or not, an optional decimal part. The look-aheads refuse a
# number that goes on with more digits or a comma group it cannot be part of ("1,20"), or is a fraction ("3/4"):
# unparsed, not 1 or 3.
_NUMBER = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![\d,]*\d)(?!\s*/\s*\d)"
_GSM8K_ANSWER = re.compile(
    rf"""[\s:=*]*             # "is: ", "is **"
    (?P<sign>[-−])?\s*\$?\s*(?P<sign_after_dollar>-)?   # -5, -$5, $-5, $5
    (?P<number>{_NUMBER})""",
    re.VERBOSE,
)
_WHOLE_NUMBER = re.compile(rf"^\s*(?P<sign>[-−])?\s*\$?\s*(?P<number>{_NUMBER})\s*$")
_CSQA_PAREN_LETTER = re.compile(r"^[\s:*-]*\(\s*(?P<letter>[A-Za-z])\s*\)")
# A bare letter counts only when nothing but punctuation follows it ("is B.", "is b", "is A)"): "is a bank" is an
# article followed by an option's text, not the letter A.
_CSQA_BARE_LETTER = re.compile(r"^[\s:*-]*(?P<letter>[A-Za-z])\s*(?=[.,;:!)*\"']|$)")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
# LaTeX a chat model states its result in: "The answer is \\(\\boxed{18}\\)".
_BOXED = re.compile(r"\\boxed\s*\{")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


@dataclass(frozen=True)
class Judgement:
    """How one answer scored, and what was extracted from it (None when unparsed)."""

    outcome: Outcome
    extracted: str | None


def answer_part(text: str) -> str:
    """The model's answer only: anything after a new `Q:` line (a model writing the next exemplar) is cut off."""
    return text.split("\nQ:", 1)[0]


def parse_number(text: str) -> Decimal | None:
    """A whole string as a number ("1,234", "$5", "-3.50", "72.0"); None if it is not exactly one number."""
    match = _WHOLE_NUMBER.match(text)
    if match is None:
        return None
    return _to_decimal(match.group("number"), negative=bool(match.group("sign")))


def _to_decimal(number: str, *, negative: bool) -> Decimal | None:
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    return -value if negative else value


def _boxed_contents(answer: str) -> list[tuple[int, str]]:
    """(position, content) of each complete `\\boxed{...}` (nested braces kept; one cut off by the token limit is
    skipped), with LaTeX text wrappers and escaped dollars undone: `\\boxed{\\text{(B)}}` -> "(B)"."""
    boxes = []
    for match in _BOXED.finditer(answer):
        depth, end = 1, match.end()
        while end < len(answer) and depth:
            depth += {"{": 1, "}": -1}.get(answer[end], 0)
            end += 1
        if depth == 0:
            content = _LATEX_TEXT.sub(r"\1", answer[match.end() : end - 1])
            boxes.append((match.start(), content.replace("\\$", "$").replace("{,}", ",")))
    return boxes


def stated_answers(text: str) -> list[str]:
    """What follows each answer marker, last marker first: the text after each "answer is", and the content of each
    `\\boxed{...}` (chat models box their result; the box after "The answer is" is the later marker)."""
    answer = answer_part(text)
    marks = [(phrase.start(), answer[phrase.end() :]) for phrase in _ANSWER_IS.finditer(answer)]
    marks += _boxed_contents(answer)
    return [rest for _, rest in sorted(marks, key=lambda mark: mark[0], reverse=True)]


def extract_gsm8k(text: str) -> Decimal | None:
    """The number right after the last answer marker ("answer is", or inside `\\boxed{}`) that is followed by one;
    None when the model stated none."""
    for rest in stated_answers(text):
        match = _GSM8K_ANSWER.match(rest)
        if match is not None:
            negative = bool(match.group("sign") or match.group("sign_after_dollar"))
            return _to_decimal(match.group("number"), negative=negative)
    return None


def _normalise_option(text: str) -> str:
    text = " ".join(text.lower().replace("*", " ").split()).strip(" .,;:!?\"'`")
    return _ARTICLE.sub("", text)


def _csqa_letter_after(rest: str, choices: tuple[tuple[str, str], ...]) -> str | None:
    labels = {label for label, _ in choices}
    for pattern in (_CSQA_PAREN_LETTER, _CSQA_BARE_LETTER):
        match = pattern.match(rest)
        if match is not None and match.group("letter").upper() in labels:
            return match.group("letter").upper()
    # Else the option's text, exactly (up to case, punctuation and a leading article), as the whole phrase.
    phrase = _normalise_option(re.split(r"[.\n]", rest, maxsplit=1)[0])
    matches = [label for label, option in choices if phrase and _normalise_option(option) == phrase]
    return matches[0] if len(matches) == 1 else None


def extract_csqa(text: str, choices: tuple[tuple[str, str], ...]) -> str | None:
    """The letter stated after the last answer marker ("answer is", or inside `\\boxed{}`) that names an option:
    "(B)", "B", "b", or the option's exact text; None otherwise."""
    for rest in stated_answers(text):
        letter = _csqa_letter_after(rest, choices)
        if letter is not None:
            return letter
    return None


def judge(dataset: Dataset, text: str, example: Example) -> Judgement:
    """Scores one answer against the example's gold answer; an unparsed answer is never counted correct."""
    if dataset == "gsm8k":
        value = extract_gsm8k(text)
        if value is None:
            return Judgement("unparsed", None)
        gold = parse_number(example.gold)
        return Judgement("correct" if gold is not None and value == gold else "wrong", _format_number(value))
    letter = extract_csqa(text, example.choices)
    if letter is None:
        return Judgement("unparsed", None)
    return Judgement("correct" if letter == example.gold else "wrong", letter)


def _format_number(value: Decimal) -> str:
    """72.0 -> "72", 0.50 -> "0.5" (for the per-answer records)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
