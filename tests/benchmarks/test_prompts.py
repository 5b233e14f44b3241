"""Few-shot prompt building and the bundled data: the paper's `Q: ...\\nA:` style, exemplars never evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.answers import extract_csqa, extract_gsm8k, parse_number
from benchmarks.datasets import DEFAULT_FILES, DatasetError, load_examples, read_jsonl
from benchmarks.prompts import (
    CSQA_EXEMPLAR_RATIONALES,
    STOP_SEQUENCES,
    few_shot_prompts,
    gsm8k_rationale,
)


def test_gsm8k_solution_becomes_one_line_without_calculator_annotations() -> None:
    solution = (
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10"
    )
    assert gsm8k_rationale(solution) == (
        "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10."
    )


def test_gsm8k_prompt_is_8_shot_from_the_training_set() -> None:
    prompts = few_shot_prompts("gsm8k")
    assert len(prompts.exemplars) == 8
    blocks = prompts.prefix.split("\n\n")
    assert len(blocks) == 8
    first = blocks[0]
    assert first.startswith("Q: Natalia sold clips to 48 of her friends in April")
    assert "\nA: Natalia sold 48/2 = 24 clips in May." in first
    assert first.endswith(" The answer is 72.")
    for block, exemplar in zip(blocks, prompts.exemplars, strict=True):
        assert block.count("\nA: ") == 1 and "<<" not in block and "####" not in block
        # Each exemplar teaches the phrase the extraction reads, with the gold answer.
        assert extract_gsm8k(block.split("\nA:", 1)[1]) == parse_number(exemplar.gold)
        assert not any(stop in block.split("\nA:", 1)[1] for stop in STOP_SEQUENCES)

    question = load_examples("gsm8k", limit=1)[0]
    prompt = prompts.build(question)
    assert prompt == f"{prompts.prefix}\n\nQ: {question.question}\nA:"


def test_csqa_prompt_is_7_shot_with_answer_choices() -> None:
    prompts = few_shot_prompts("csqa")
    assert len(prompts.exemplars) == 7
    blocks = prompts.prefix.split("\n\n")
    assert len(blocks) == 7
    assert blocks[0] == (
        "Q: What are cats often known for?\n"
        "Answer Choices: (A) whiskers (B) sharp teeth (C) purr (D) four legs (E) sharp claws\n"
        "A: Cats scratch, climb and defend themselves with their claws, which are sharp. So the answer is (E)."
    )
    for block, exemplar in zip(blocks, prompts.exemplars, strict=True):
        assert extract_csqa(block.split("\nA:", 1)[1], exemplar.choices) == exemplar.gold

    question = load_examples("csqa", limit=1)[0]
    assert prompts.build(question) == (
        f"{prompts.prefix}\n\nQ: What do people aim to do at work?\nAnswer Choices: (A) complete job "
        "(B) learn from each other (C) kill animals (D) wear hats (E) talk to each other\nA:"
    )


def test_csqa_exemplars_are_the_last_7_questions_and_never_evaluated() -> None:
    ids = [row["id"] for row in read_jsonl(DEFAULT_FILES["csqa"])]
    assert list(CSQA_EXEMPLAR_RATIONALES) == ids[-7:]
    prompts = few_shot_prompts("csqa")
    evaluated = load_examples("csqa", exclude=prompts.exemplar_questions())
    assert len(evaluated) == len(ids) - 7
    assert not {e.id for e in evaluated} & set(CSQA_EXEMPLAR_RATIONALES)


def test_bundled_data_loads_with_gold_answers() -> None:
    gsm8k = load_examples("gsm8k")
    assert len(gsm8k) == 500 and all(parse_number(e.gold) is not None for e in gsm8k)
    csqa = load_examples("csqa")
    assert len(csqa) == 500 and all(len(e.choices) == 5 and e.gold in "ABCDE" for e in csqa)
    assert len(load_examples("csqa", limit=3)) == 3


def test_any_file_in_the_same_layout_and_exemplars_in_it_are_skipped(tmp_path: Path) -> None:
    exemplar = few_shot_prompts("gsm8k").exemplars[0]
    rows = [
        {"question": "What is 2 + 2?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"},
        {"question": exemplar.question + "  ", "answer": "... #### 72"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    examples = load_examples("gsm8k", path, exclude=few_shot_prompts("gsm8k").exemplar_questions())
    assert [(e.question, e.gold) for e in examples] == [("What is 2 + 2?", "4")]


def test_malformed_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "no answer key", "choices": {"label": ["A"], "text": ["x"]}}\n')
    with pytest.raises(DatasetError, match="answerKey"):
        load_examples("csqa", path)
    path.write_text('{"question": "q", "answer": "no final answer"}\n')
    with pytest.raises(DatasetError, match="####"):
        load_examples("gsm8k", path)
    with pytest.raises(DatasetError, match="no such file"):
        load_examples("gsm8k", tmp_path / "missing.jsonl")
