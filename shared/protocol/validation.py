"""Request checks both tiers share; each failure names the field that is wrong.

Fields are named as the domain types name them (`prompt`, `messages[0].role`, `temperature`, `stop[1]`, ...): on the
gRPC wire the messages sit in `conversation` and the sampling settings in `sampling`.
"""

from __future__ import annotations

from shared.protocol.domain import CHAT_ROLES, GuidancePolicy, PromptInput, Sampling
from shared.protocol.errors import InvalidArgumentError

# Each message is rendered by a chat template and tokenised as its own piece: the character limit alone would let
# tens of thousands of one-character messages through (~64k tokeniser calls for one request).
MAX_MESSAGES = 256
MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 64
MAX_TEMPERATURE = 2.0
# Escalation bounds: each burst is a teacher call re-reading the prompt and the answer so far.
MAX_BURSTS = 16
MAX_BURST_TOKENS = 256


def validate_prompt_input(prompt_input: PromptInput, *, max_prompt_chars: int) -> None:
    """Exactly one of prompt and messages, known roles, nothing empty, nothing longer than `max_prompt_chars`."""
    if prompt_input.prompt and prompt_input.messages:
        raise InvalidArgumentError("prompt", "give either prompt or messages, not both")
    if not prompt_input.prompt and not prompt_input.messages:
        raise InvalidArgumentError("prompt", "is empty: give a prompt or at least one message")
    if len(prompt_input.messages) > MAX_MESSAGES:
        raise InvalidArgumentError(
            "messages", f"at most {MAX_MESSAGES} messages in one conversation, got {len(prompt_input.messages)}"
        )
    total = len(prompt_input.prompt) + len(prompt_input.system_prompt)
    for index, message in enumerate(prompt_input.messages):
        if message.role not in CHAT_ROLES:
            raise InvalidArgumentError(
                f"messages[{index}].role", f"must be one of {', '.join(CHAT_ROLES)}, got {message.role[:40]!r}"
            )
        if not message.content:
            raise InvalidArgumentError(f"messages[{index}].content", "is empty")
        total += len(message.content)
    # A conversation may end with any role: a new assistant turn answers it (as OpenAI and vLLM do), unless
    # `continue_final_message` asks to continue the final assistant message instead.
    if prompt_input.continue_final_message and (
        not prompt_input.messages or prompt_input.messages[-1].role != "assistant"
    ):
        raise InvalidArgumentError(
            "continue_final_message", "needs a conversation whose last message has role 'assistant'"
        )
    if total > max_prompt_chars:
        raise InvalidArgumentError("prompt", f"is {total} characters long; the limit is {max_prompt_chars}")


def validate_sampling(sampling: Sampling) -> None:
    """Temperature in [0, 2], top_p in (0, 1], a seed of 64 bits, a few short non-empty stop sequences."""
    if not 0.0 <= sampling.temperature <= MAX_TEMPERATURE:  # also rejects NaN
        raise InvalidArgumentError(
            "temperature", f"must be between 0 and {MAX_TEMPERATURE}, got {sampling.temperature}"
        )
    if not 0.0 < sampling.top_p <= 1.0:
        raise InvalidArgumentError("top_p", f"must be in (0, 1], got {sampling.top_p}")
    if sampling.seed is not None and not -(2**63) <= sampling.seed < 2**63:  # the protocol's int64 (JSON has no limit)
        raise InvalidArgumentError("seed", "must fit in a signed 64-bit integer")
    if len(sampling.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgumentError("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(sampling.stop)}")
    for index, stop in enumerate(sampling.stop):
        if not stop or len(stop) > MAX_STOP_LENGTH:
            raise InvalidArgumentError(f"stop[{index}]", f"must be 1 to {MAX_STOP_LENGTH} characters long")


def validate_token_count(field: str, value: int, *, minimum: int, maximum: int) -> None:
    """`minimum <= value <= maximum`, with the field named when it is not."""
    if not minimum <= value <= maximum:
        raise InvalidArgumentError(field, f"must be between {minimum} and {maximum}, got {value}")


# Student tokens per verified draft, and teacher tokens per correction (the teacher's own limit).
MAX_DRAFT_TOKENS = 64
MAX_CORRECTION_TOKENS = 64


def validate_policy(policy: GuidancePolicy) -> None:
    """Positive counts, a fraction in [0, 1]: each failure names the field inside `guidance_policy`."""
    for name in ("floor_tokens", "window", "entropy_run", "burst_tokens"):
        if getattr(policy, name) < 1:
            raise InvalidArgumentError(f"guidance_policy.{name}", f"must be at least 1, got {getattr(policy, name)}")
    if not 0 <= policy.max_bursts <= MAX_BURSTS:
        raise InvalidArgumentError(
            "guidance_policy.max_bursts", f"must be between 0 and {MAX_BURSTS}, got {policy.max_bursts}"
        )
    if policy.burst_tokens > MAX_BURST_TOKENS:
        raise InvalidArgumentError(
            "guidance_policy.burst_tokens", f"must be at most {MAX_BURST_TOKENS}, got {policy.burst_tokens}"
        )
    if not 0.0 <= policy.min_top1_fraction <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(
            "guidance_policy.min_top1_fraction", f"must be between 0 and 1, got {policy.min_top1_fraction}"
        )
    if policy.min_mean_logprob != policy.min_mean_logprob or policy.entropy_threshold != policy.entropy_threshold:
        raise InvalidArgumentError("guidance_policy", "thresholds must be numbers, not NaN")
    if not 1 <= policy.draft_tokens <= MAX_DRAFT_TOKENS:
        raise InvalidArgumentError(
            "guidance_policy.draft_tokens", f"must be between 1 and {MAX_DRAFT_TOKENS}, got {policy.draft_tokens}"
        )
    if not 1 <= policy.correction_tokens <= MAX_CORRECTION_TOKENS:
        raise InvalidArgumentError(
            "guidance_policy.correction_tokens",
            f"must be between 1 and {MAX_CORRECTION_TOKENS}, got {policy.correction_tokens}",
        )
    if not 0.0 < policy.min_teacher_prob <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(
            "guidance_policy.min_teacher_prob", f"must be in (0, 1], got {policy.min_teacher_prob}"
        )
    if policy.kind == "verify" and policy.escalate:
        # The teacher checks every draft: a burst on the student's doubt would be checked again, so it buys nothing.
        raise InvalidArgumentError(
            "guidance_policy.escalate", "applies to the adaptive policy; verify has the teacher check every draft"
        )
    if not 0.0 <= policy.draft_min_prob <= 1.0:
        raise InvalidArgumentError(
            "guidance_policy.draft_min_prob", f"must be between 0 and 1, got {policy.draft_min_prob}"
        )
