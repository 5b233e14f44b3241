"""Benchmark datasets: GSM8K and CommonsenseQA questions read from JSONL files, with their gold answers."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Dataset = Literal["gsm8k", "csqa"]
DATASETS: tuple[Dataset, ...] = ("gsm8k", "csqa")

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_FILES: dict[Dataset, Path] = {
    "gsm8k": DATA_DIR / "gsm8k_test_dev500.jsonl",
    "csqa": DATA_DIR / "csqa_dev_dev500.jsonl",
}
GSM8K_TRAIN_FILE = DATA_DIR / "gsm8k_train_head200.jsonl"


class DatasetError(ValueError):
    """A data file that is missing or not in the expected JSONL layout."""


@dataclass(frozen=True)
class Example:
    """One question with its gold answer (GSM8K: the number after `####`; CSQA: the answer's letter)."""

    id: str
    question: str
    gold: str
    # CSQA: the options as (label, text) pairs, in order; empty for GSM8K.
    choices: tuple[tuple[str, str], ...] = ()
    # GSM8K: the worked solution before `#### N` (used to build exemplars); empty for CSQA.
    solution: str = ""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not JSON ({error})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def gsm8k_example(row: dict[str, Any], index: int) -> Example:
    """A GSM8K row: `question` and `answer` (a worked solution ending in `#### N`)."""
    try:
        question, answer = str(row["question"]), str(row["answer"])
    except KeyError as missing:
        raise DatasetError(f"GSM8K row {index}: missing field {missing}") from None
    solution, separator, gold = answer.rpartition("####")
    if not separator or not gold.strip():
        raise DatasetError(f"GSM8K row {index}: the answer does not end in '#### N'")
    return Example(
        id=str(row.get("id", index)), question=question.strip(), gold=gold.strip(), solution=solution.strip()
    )


def csqa_example(row: dict[str, Any], index: int) -> Example:
    """A CommonsenseQA row in the Hugging Face layout: `question`, `choices.label`, `choices.text`, `answerKey`."""
    try:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        question, gold = str(row["question"]), str(row["answerKey"]).strip().upper()
    except (KeyError, TypeError) as missing:
        raise DatasetError(f"CSQA row {index}: missing field {missing}") from None
    if len(labels) != len(texts) or not labels:
        raise DatasetError(f"CSQA row {index}: choices.label and choices.text differ in length")
    choices = tuple((str(label).strip().upper(), str(text).strip()) for label, text in zip(labels, texts, strict=True))
    if gold not in {label for label, _ in choices}:
        raise DatasetError(f"CSQA row {index}: answerKey {gold!r} is not one of the choices")
    return Example(id=str(row.get("id", index)), question=" ".join(question.split()), gold=gold, choices=choices)


def parse_rows(dataset: Dataset, rows: list[dict[str, Any]]) -> list[Example]:
    parse = gsm8k_example if dataset == "gsm8k" else csqa_example
    return [parse(row, index) for index, row in enumerate(rows)]


def load_examples(
    dataset: Dataset, path: Path | None = None, *, exclude: Collection[str] = (), limit: int | None = None
) -> list[Example]:
    """The evaluation questions, in file order: `path` (default: the bundled file), minus any whose question is in
    `exclude` (the few-shot exemplars; compared up to white space), then the first `limit`."""
    examples = parse_rows(dataset, read_jsonl(path or DEFAULT_FILES[dataset]))
    excluded = {same_question(q) for q in exclude}
    examples = [e for e in examples if same_question(e.question) not in excluded]
    return examples[:limit] if limit is not None else examples


def same_question(question: str) -> str:
    """A question's text up to white space (the key the exemplars are kept out of the evaluation set by)."""
    return " ".join(question.split())
