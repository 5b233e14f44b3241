"""Prompt formats: each tier turns a raw prompt or chat messages into text for its own model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.protocol.domain import PromptInput

CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RenderedPrompt:
    """Model-ready prompt text, the stop sequences the format implies, and how guidance is appended to it."""

    text: str
    stop: tuple[str, ...] = ()
    # In a chat format the guidance pre-fills the assistant turn, which starts without leading white space (unless
    # the turn already has text: then the guidance continues it as written).
    strip_guidance_start: bool = False


class PromptFormat(Protocol):
    """Renders a user's input for one model."""

    def render(self, prompt_input: PromptInput) -> RenderedPrompt: ...


def _with_system(system_prompt: str, text: str) -> str:
    return f"{system_prompt}\n\n{text}" if system_prompt else text


class CompletionFormat:
    """For base models (no chat template): the paper's `Q: ...\\nA: ...` transcript, raw prompts as they are."""

    def render(self, prompt_input: PromptInput) -> RenderedPrompt:
        if not prompt_input.messages:
            return RenderedPrompt(_with_system(prompt_input.system_prompt, prompt_input.prompt))
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
        return RenderedPrompt(_with_system("\n".join(system), "\n".join(lines)), stop=("\nQ:",))


class ChatTemplateFormat:
    """For chat models: the model's own Jinja chat template (from its GGUF), ending in an open assistant turn."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = "") -> None:
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = environment.from_string(template)
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(self, prompt_input: PromptInput) -> RenderedPrompt:
        if not prompt_input.messages:
            return RenderedPrompt(_with_system(prompt_input.system_prompt, prompt_input.prompt))
        turns = prompt_input.messages
        prefill = ""
        if prompt_input.continue_final_message:  # the open assistant turn starts with the given text
            turns, prefill = turns[:-1], turns[-1].content
        messages = [{"role": m.role, "content": m.content} for m in turns]
        if prompt_input.system_prompt:
            messages.insert(0, {"role": "system", "content": prompt_input.system_prompt})
        text = self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self._bos_token,
            eos_token=self._eos_token,
        )
        return RenderedPrompt(text + prefill, strip_guidance_start=not prefill)


PromptFormatSetting = Literal["auto", "completion", "chat"]


def select_prompt_format(setting: PromptFormatSetting, template: str | None) -> PromptFormat:
    """Every tier's and backend's choice: 'auto' uses the model's chat template when it has one, 'completion' the
    paper's Q/A transcript, 'chat' the template (an error when the model has none)."""
    if setting == "completion" or (setting == "auto" and not template):
        return CompletionFormat()
    if not template:
        raise ValueError("prompt_format is 'chat' but the model has no chat template; use 'auto' or 'completion'")
    return ChatTemplateFormat(template)
