"""Prompt formats: each tier turns a raw prompt or chat messages into text for its own model."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.protocol.domain import PromptInput
from shared.protocol.errors import InvalidArgumentError

logger = logging.getLogger(__name__)


# A piece of prompt text and whether it is trusted: only trusted text (a chat template's own markup) may contain
# control tokens such as `<|im_start|>`; everything a user or the teacher wrote is tokenised as plain text, so a
# message that spells out a control token cannot open a new role (prompt injection).
PromptPiece = tuple[str, bool]


def merge_pieces(pieces: Sequence[PromptPiece]) -> list[PromptPiece]:
    """Neighbouring pieces of the same trust joined, empty ones dropped: a tokenizer reads each run at once, so text
    appended piece by piece tokenises as if written at once."""
    merged: list[PromptPiece] = []
    for text, trusted in pieces:
        if merged and merged[-1][1] == trusted:
            merged[-1] = (merged[-1][0] + text, trusted)
        elif text:
            merged.append((text, trusted))
    return merged


@dataclass(frozen=True)
class RenderedPrompt:
    """Model-ready prompt text in trusted and untrusted pieces, the stop sequences the format implies, and how
    guidance is appended to it."""

    pieces: tuple[PromptPiece, ...]
    stop: tuple[str, ...] = ()
    # In a chat format the guidance pre-fills the assistant turn, which starts without leading white space (unless
    # the turn already has text: then the guidance continues it as written).
    strip_guidance_start: bool = False

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.pieces)

    def with_untrusted(self, text: str) -> tuple[PromptPiece, ...]:
        """The pieces followed by `text` (e.g. guidance written so far), which is never trusted."""
        return (*self.pieces, (text, False)) if text else self.pieces


class PromptFormat(Protocol):
    """Renders a user's input for one model."""

    def render(self, prompt_input: PromptInput) -> RenderedPrompt: ...


def _with_system(system_prompt: str, text: str) -> str:
    return f"{system_prompt}\n\n{text}" if system_prompt else text


class CompletionFormat:
    """For base models (no chat template): the paper's `Q: ...\\nA: ...` transcript, raw prompts as they are.

    It has no markup of its own worth trusting: the whole prompt is plain text.
    """

    def render(self, prompt_input: PromptInput) -> RenderedPrompt:
        if not prompt_input.messages:
            return RenderedPrompt(((_with_system(prompt_input.system_prompt, prompt_input.prompt), False),))
        system = [prompt_input.system_prompt] if prompt_input.system_prompt else []
        lines: list[str] = []
        for message in prompt_input.messages:
            if message.role == "system":
                system.append(message.content)
            elif message.role == "user":
                lines.append(f"Q: {message.content}")
            else:
                lines.append(f"A: {message.content}")
        if not prompt_input.continue_final_message:
            lines.append("A:")
        # A base model happily writes the next question itself: the answer ends where it starts one.
        text = _with_system("\n".join(system), "\n".join(lines))
        return RenderedPrompt(((text, False),), stop=("\nQ:",))


class _TemplateRefusalError(Exception):
    """A chat template's own `raise_exception(...)`: the conversation has a shape the model does not take."""


def _raise_exception(message: str) -> None:
    # Templates of several families (Gemma, Llama 2, Mistral, ...) call this when the roles do not alternate; Hugging
    # Face and llama.cpp define it for them. Without it the template fails with an undefined-name error.
    raise _TemplateRefusalError(message)


# Stand-ins for message contents while the template renders: private-use characters no template touches.
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _sentinel(index: int) -> str:
    return f"\ue000{index}\ue001"


class ChatTemplateFormat:
    """For chat models: the model's own Jinja chat template (from its GGUF), ending in an open assistant turn.

    The template renders stand-ins for the message contents, which are put back afterwards as untrusted pieces:
    the template's markup is the only trusted text.
    """

    def __init__(
        self, template: str, bos_token: str = "", eos_token: str = "", *, max_rendered_chars: int | None = None
    ) -> None:
        # The template's markup around each message is not counted by the prompt limit: a bound on the rendered text
        # keeps a conversation of many short messages (or a template that repeats them) from costing unbounded work.
        self._max_rendered_chars = max_rendered_chars
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise_exception
        self._template = environment.from_string(template)
        self._bos_token = bos_token
        self._eos_token = eos_token
        # Some templates trim message contents: the real contents are trimmed the same way when put back.
        try:
            probe = self._render([{"role": "user", "content": f" {_sentinel(0)} "}])
        except _TemplateRefusalError as refusal:
            raise ValueError(f"the chat template refuses a single user message: {refusal}") from None
        if not _SENTINEL.search(probe):
            raise ValueError("the chat template does not render message contents as given")
        self._trims = f" {_sentinel(0)} " not in probe

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self._template.render(
            messages=messages, add_generation_prompt=True, bos_token=self._bos_token, eos_token=self._eos_token
        )

    def render(self, prompt_input: PromptInput) -> RenderedPrompt:
        if not prompt_input.messages:
            return RenderedPrompt(((_with_system(prompt_input.system_prompt, prompt_input.prompt), False),))
        turns = [(m.role, m.content) for m in prompt_input.messages]
        prefill = ""
        if prompt_input.continue_final_message:  # the open assistant turn starts with the given text
            turns, prefill = turns[:-1], turns[-1][1]
        if prompt_input.system_prompt:
            turns.insert(0, ("system", prompt_input.system_prompt))
        contents = [content.strip() if self._trims else content for _, content in turns]
        try:
            text = self._render([{"role": role, "content": _sentinel(i)} for i, (role, _) in enumerate(turns)])
        except _TemplateRefusalError as refusal:
            # The input's fault, not the server's: INVALID_ARGUMENT, which an edge never counts against its teacher.
            raise InvalidArgumentError("messages", f"the model's chat template refuses them: {refusal}") from None
        rendered_chars = len(_SENTINEL.sub("", text)) + sum(len(content) for content in contents) + len(prefill)
        if self._max_rendered_chars is not None and rendered_chars > self._max_rendered_chars:
            raise InvalidArgumentError(
                "messages",
                f"render to {rendered_chars} characters with the model's chat template; the limit is "
                f"{self._max_rendered_chars}",
            )
        pieces: list[PromptPiece] = []
        for index, part in enumerate(_SENTINEL.split(text)):
            if index % 2 == 0:
                pieces.append((part, True))  # the template's markup
            else:
                pieces.append((contents[int(part)], False))
        if prefill:
            pieces.append((prefill, False))
        return RenderedPrompt(tuple(p for p in pieces if p[0]), strip_guidance_start=not prefill)


PromptFormatSetting = Literal["auto", "completion", "chat"]


# A rendered chat prompt may be this many times the prompt limit (the template's markup on top of the contents).
RENDERED_SIZE_FACTOR = 2


def select_prompt_format(
    setting: PromptFormatSetting,
    template: str | None,
    template_file: Path | None = None,
    *,
    max_prompt_chars: int | None = None,
) -> PromptFormat:
    """Every tier's and backend's choice: 'auto' uses the model's chat template when it has one, 'completion' the
    paper's Q/A transcript, 'chat' the template (an error when the model has none). `template_file`, when given,
    replaces the model's own template (like vLLM's and llama.cpp's `--chat-template`). With `max_prompt_chars`, a
    chat prompt that renders to more than `RENDERED_SIZE_FACTOR` times it is refused (INVALID_ARGUMENT on
    `messages`)."""
    if template_file is not None:
        template = template_file.read_text()
    if setting == "completion" or (setting == "auto" and not template):
        return CompletionFormat()
    if not template:
        raise ValueError("prompt_format is 'chat' but the model has no chat template; use 'auto' or 'completion'")
    try:
        limit = None if max_prompt_chars is None else RENDERED_SIZE_FACTOR * max_prompt_chars
        return ChatTemplateFormat(template, max_rendered_chars=limit)
    except ValueError:
        if setting == "chat":
            raise
        logger.warning("the model's chat template cannot be used safely; using the completion format")
        return CompletionFormat()
