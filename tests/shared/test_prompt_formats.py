"""Prompt formats: the paper's Q/A transcript for the base teacher, the model's own template for the student."""

from pathlib import Path

import pytest

from shared.prompt_formats import ChatTemplateFormat, CompletionFormat, select_prompt_format
from shared.protocol.domain import ChatMessage, PromptInput
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.validation import validate_prompt_input

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


def test_continuing_the_final_assistant_message_in_both_formats() -> None:
    turns = (ChatMessage("user", "Capital of France?"), ChatMessage("assistant", "The capital"))
    chat = ChatTemplateFormat(CHATML).render(PromptInput(messages=turns, continue_final_message=True))
    assert chat.text == "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nThe capital"
    assert not chat.strip_guidance_start, "guidance continues the given text as written"
    completion = CompletionFormat().render(PromptInput(messages=turns, continue_final_message=True))
    assert completion.text == "Q: Capital of France?\nA: The capital"


def test_a_final_plain_assistant_message_is_answered_in_a_new_turn_in_both_formats() -> None:
    """As OpenAI and vLLM do: valid input (both tiers validate it alike), and a new assistant turn follows it."""
    turns = PromptInput(messages=(ChatMessage("user", "Capital of France?"), ChatMessage("assistant", "Paris.")))
    validate_prompt_input(turns, max_prompt_chars=1000)
    chat = ChatTemplateFormat(CHATML).render(turns)
    assert chat.text.endswith("<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>assistant\n")
    assert chat.strip_guidance_start
    assert CompletionFormat().render(turns).text == "Q: Capital of France?\nA: Paris.\nA:"


def test_continued_input_is_the_answer_so_far_as_an_assistant_prefill() -> None:
    question = PromptInput(messages=(ChatMessage("user", "Hi?"),))
    once = question.continued(" Hello")
    assert once.continue_final_message and once.messages[-1] == ChatMessage("assistant", " Hello")
    assert once.continued(" there").messages[-1] == ChatMessage("assistant", " Hello there")
    assert PromptInput(prompt="Q: hi\nA:").continued(" Hello").prompt == "Q: hi\nA: Hello"
    assert question.continued("") is question


# Roles must alternate, as the templates of several model families demand (Gemma, Llama 2, Mistral).
ALTERNATING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("roles", [("user", "user"), ("assistant", "user")])
def test_a_templates_own_refusal_is_bad_input_naming_messages(roles: tuple[str, ...]) -> None:
    chat = ChatTemplateFormat(ALTERNATING_TEMPLATE)
    conversation = PromptInput(messages=tuple(ChatMessage(role, f"turn {i}") for i, role in enumerate(roles)))
    with pytest.raises(InvalidArgumentError) as caught:
        chat.render(conversation)
    assert caught.value.field == "messages"
    assert "must alternate" in str(caught.value)
    accepted = chat.render(PromptInput(messages=(ChatMessage("user", "hi"),)))
    assert accepted.text == "<|user|>hi\n<|assistant|>"


def test_a_template_file_replaces_the_models_own(tmp_path: Path) -> None:
    path = tmp_path / "template.jinja"
    path.write_text(ALTERNATING_TEMPLATE)
    chosen = select_prompt_format("auto", None, path)
    assert chosen.render(PromptInput(messages=(ChatMessage("user", "hi"),))).text == "<|user|>hi\n<|assistant|>"


def test_a_conversation_that_renders_past_the_limit_is_refused_naming_messages() -> None:
    """Many short messages stay under the character limit of their contents, but the template's markup around each
    one is real work: the rendered prompt is bounded too."""
    chat = select_prompt_format("chat", CHATML, max_prompt_chars=100)
    few = PromptInput(messages=(ChatMessage("user", "hi"),))
    assert chat.render(few).text.endswith("<|im_start|>assistant\n")
    many = PromptInput(messages=tuple(ChatMessage("user", "a") for _ in range(20)))  # 20 characters of content
    with pytest.raises(InvalidArgumentError) as caught:
        chat.render(many)
    assert caught.value.field == "messages" and "the limit is 200" in str(caught.value)
