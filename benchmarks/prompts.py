"""The benchmark's two workloads: the paper's few-shot chain-of-thought prompts (8 GSM8K exemplars, 7 CSQA
exemplars, `Q: ...\\nA:` style) and zero-shot chat messages with a system prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.datasets import DEFAULT_FILES, GSM8K_TRAIN_FILE, Dataset, Example, load_examples

Workload = Literal["fewshot", "chat"]
WORKLOADS: tuple[Workload, ...] = ("fewshot", "chat")

# Every answer ends where the model starts the next question, or leaves a blank line (exemplars are separated by one).
STOP_SEQUENCES: tuple[str, ...] = ("\nQ:", "\n\n")
EXEMPLAR_SEPARATOR = "\n\n"
GSM8K_SHOTS = 8
# The answer phrases the exemplars teach and `benchmarks.answers` looks for.
GSM8K_ANSWER_PHRASE = "The answer is"
CSQA_ANSWER_PHRASE = "So the answer is"

# CSQA exemplars: the last 7 questions of the bundled dev file (never evaluated), with short rationales written for
# this project in the style of Wei et al. (2022), whose hand-written CSQA exemplars the paper used.
CSQA_EXEMPLAR_RATIONALES: dict[str, str] = {
    "1fe90a4aee405e1aa2279442d28803ae": "Cats scratch, climb and defend themselves with their claws, which are sharp.",
    "01794dde3ca2991615f1aa2f63fb22e3": "He is on a plane that is about to land, and planes land at an airport.",
    "21ce6f7c5c3d1ad8cf234988c1ad471f": "Grapes are a fruit, and fresh fruit is sold at a fruit stand.",
    "6c84e79d0595efd99596faa07c4961d0": "To climb up a cliff you hold on to the rocks, so you grab them.",
    "88f1fe6cfbcb1a25f25454341c789463": "Hoses and parts for tools are sold at a hardware store.",
    "5074bcaf0f700c9f3c8c563067af156a": "He closed his eyes because the music calmed him, so its effect was soothing.",
    "6a253e076cd2af00e17d9950d70daf47": "Framing, trusses and beams are put up first when a new building is built.",
}

_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def gsm8k_rationale(solution: str) -> str:
    """A GSM8K worked solution as one line of sentences, without its `<<...>>` calculator annotations."""
    sentences = []
    for line in solution.splitlines():
        line = " ".join(_CALCULATOR_ANNOTATION.sub("", line).split())
        if line:
            sentences.append(line if line[-1] in ".!?" else f"{line}.")
    return " ".join(sentences)


def gsm8k_question(example: Example) -> str:
    return f"Q: {example.question}\nA:"


def csqa_question(example: Example) -> str:
    options = " ".join(f"({label}) {text}" for label, text in example.choices)
    return f"Q: {example.question}\nAnswer Choices: {options}\nA:"


def gsm8k_exemplar(example: Example) -> str:
    return f"{gsm8k_question(example)} {gsm8k_rationale(example.solution)} {GSM8K_ANSWER_PHRASE} {example.gold}."


def csqa_exemplar(example: Example, rationale: str) -> str:
    return f"{csqa_question(example)} {rationale} {CSQA_ANSWER_PHRASE} ({example.gold})."


@dataclass(frozen=True)
class QuestionInput:
    """What one request carries: a raw completion prompt (few-shot), or a system prompt and one user message (chat,
    which each tier renders with its own model's chat template)."""

    prompt: str | None = None
    system_prompt: str = ""
    user: str | None = None


@dataclass(frozen=True)
class FewShotPrompts:
    """The few-shot prefix of one dataset and the exemplars it uses (to be kept out of the evaluation set)."""

    dataset: Dataset
    exemplars: tuple[Example, ...]
    prefix: str
    workload: Workload = "fewshot"
    stop: tuple[str, ...] = STOP_SEQUENCES

    def build(self, example: Example) -> str:
        """Prefix + `Q: <question>\\nA:`: the raw completion prompt both tiers receive; the answer follows `A:`."""
        question = gsm8k_question(example) if self.dataset == "gsm8k" else csqa_question(example)
        return f"{self.prefix}{EXEMPLAR_SEPARATOR}{question}"

    def question_input(self, example: Example) -> QuestionInput:
        return QuestionInput(prompt=self.build(example))

    @property
    def shared_prefix(self) -> str:
        """The text every question's request starts with (what a warm cache holds)."""
        return self.prefix

    @property
    def shots(self) -> int:
        return len(self.exemplars)

    def exemplar_questions(self) -> list[str]:
        """The exemplars' questions (an evaluation file may contain them: they are skipped)."""
        return [e.question for e in self.exemplars]


# The chat workload's system prompts: step-by-step reasoning in prose (asked for no more, the Qwen2.5-Coder models
# write a Python program and invent its output), ending in the phrase `benchmarks.answers` reads.
CHAT_SYSTEM_PROMPTS: dict[Dataset, str] = {
    "gsm8k": (
        "You are a careful math tutor. Solve the problem step by step in plain English sentences, doing the "
        "arithmetic in the text. Do not write code or programs. Finish with a last line of the form "
        f'"{GSM8K_ANSWER_PHRASE} N." where N is the final number alone.'
    ),
    "csqa": (
        "You answer multiple-choice questions. Reason step by step in a few plain English sentences. Do not write "
        f'code. Finish with a last line of the form "{CSQA_ANSWER_PHRASE} (X)." where X is the letter of the best '
        "choice."
    ),
}


@dataclass(frozen=True)
class ChatPrompts:
    """Zero-shot chat: the dataset's system prompt and the question as the one user message; no stop sequences
    (each model's chat template ends the answer with its own end-of-turn token). `exemplars` are the few-shot
    workload's, kept out of the evaluation set here too, so both workloads ask the same questions."""

    dataset: Dataset
    exemplars: tuple[Example, ...]
    system_prompt: str
    workload: Workload = "chat"
    stop: tuple[str, ...] = ()

    def build(self, example: Example) -> str:
        """The user message: the question (CSQA: with its answer choices)."""
        if self.dataset == "gsm8k":
            return example.question
        options = " ".join(f"({label}) {text}" for label, text in example.choices)
        return f"{example.question}\nAnswer Choices: {options}"

    def question_input(self, example: Example) -> QuestionInput:
        return QuestionInput(system_prompt=self.system_prompt, user=self.build(example))

    @property
    def shared_prefix(self) -> str:
        return self.system_prompt

    @property
    def shots(self) -> int:
        return 0

    def exemplar_questions(self) -> list[str]:
        return [e.question for e in self.exemplars]


Prompts = FewShotPrompts | ChatPrompts


def workload_prompts(dataset: Dataset, workload: Workload) -> Prompts:
    """The prompts of one dataset in one workload."""
    few_shot = few_shot_prompts(dataset)
    if workload == "fewshot":
        return few_shot
    return ChatPrompts(dataset, few_shot.exemplars, CHAT_SYSTEM_PROMPTS[dataset])


def few_shot_prompts(dataset: Dataset, exemplar_file: Path | None = None) -> FewShotPrompts:
    """GSM8K: the first 8 training problems; CSQA: the 7 fixed exemplars of `CSQA_EXEMPLAR_RATIONALES`."""
    if dataset == "gsm8k":
        exemplars = tuple(load_examples("gsm8k", exemplar_file or GSM8K_TRAIN_FILE, limit=GSM8K_SHOTS))
        if len(exemplars) < GSM8K_SHOTS:
            raise ValueError(f"GSM8K needs {GSM8K_SHOTS} exemplars, the file has {len(exemplars)}")
        return FewShotPrompts(dataset, exemplars, EXEMPLAR_SEPARATOR.join(gsm8k_exemplar(e) for e in exemplars))
    by_id = {e.id: e for e in load_examples("csqa", exemplar_file or DEFAULT_FILES["csqa"])}
    missing = [i for i in CSQA_EXEMPLAR_RATIONALES if i not in by_id]
    if missing:
        raise ValueError(f"CSQA exemplar ids not found in the exemplar file: {missing}")
    exemplars = tuple(by_id[i] for i in CSQA_EXEMPLAR_RATIONALES)
    prefix = EXEMPLAR_SEPARATOR.join(csqa_exemplar(by_id[i], r) for i, r in CSQA_EXEMPLAR_RATIONALES.items())
    return FewShotPrompts(dataset, exemplars, prefix)
