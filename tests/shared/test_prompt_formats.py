"""Prompt formats: the paper's Q/A transcript for the base teacher, the model's own template for the student."""

import pytest

from shared.prompt_formats import ChatTemplateFormat, CompletionFormat, select_prompt_format
from shared.protocol.domain import ChatMessage, PromptInput

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_completion_format_renders_paper_transcript_and_stops_at_next_question() -> None:
    rendered = CompletionFormat().render(
        PromptInput(messages=(ChatMessage("user", "2+2?"), ChatMessage("assistant", "4"), ChatMessage("user", "3+3?")))
    )
    assert rendered.text == "Q: 2+2?\nA: 4\nQ: 3+3?\nA:"
    assert rendered.stop == ("\nQ:",)
    assert not rendered.strip_guidance_start


def test_raw_prompt_is_used_as_is_with_optional_system_prompt() -> None:
    assert CompletionFormat().render(PromptInput(prompt="Q: x\nA:")).text == "Q: x\nA:"
    assert CompletionFormat().render(PromptInput(prompt="P", system_prompt="S")).text == "S\n\nP"
    assert ChatTemplateFormat(CHATML).render(PromptInput(prompt="raw")).text == "raw"


def test_chat_template_opens_the_assistant_turn_for_guidance() -> None:
    rendered = ChatTemplateFormat(CHATML).render(
        PromptInput(messages=(ChatMessage("user", "Hi"),), system_prompt="Be brief.")
    )
    assert rendered.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert rendered.strip_guidance_start


def test_select_prompt_format_follows_the_setting_and_the_models_template() -> None:
    assert isinstance(select_prompt_format("auto", CHATML), ChatTemplateFormat)
    assert isinstance(select_prompt_format("auto", None), CompletionFormat)
    assert isinstance(select_prompt_format("auto", ""), CompletionFormat)
    assert isinstance(select_prompt_format("completion", CHATML), CompletionFormat)
    assert isinstance(select_prompt_format("chat", CHATML), ChatTemplateFormat)
    with pytest.raises(ValueError, match="no chat template"):
        select_prompt_format("chat", None)
