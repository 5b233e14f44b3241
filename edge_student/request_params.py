"""One request's settings, whichever API it came through: the edge's defaults filled in and every value checked.

`max_tokens` means the same on both doors and in every mode: the most tokens of the whole answer (guidance, student
text, bursts), counted in the student's tokenizer; K is clipped to it.

The gRPC servicer and the OpenAI-compatible HTTP facade both decode their wire format into plain values and call
`generate_params`, so the two answer the same request alike and refuse the same bad input naming the same field
(in the domain's names: `prompt`, `messages[0].role`, `max_tokens`, `guidance_tokens`, `temperature`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_student.settings import EdgeSettings
from shared.protocol.domain import GenerateParams, GuidancePolicy, Mode, PromptInput, Sampling
from shared.protocol.errors import InvalidArgumentError
from shared.protocol.validation import validate_policy, validate_prompt_input, validate_sampling, validate_token_count


def resolve_guidance_tokens(settings: EdgeSettings, guidance_tokens: int | None) -> int:
    """K, the one place it is defaulted and checked: the edge's default when unset, else 0 to the edge's limit
    (`InvalidArgumentError` on `guidance_tokens`)."""
    guidance_tokens = settings.default_guidance_tokens if guidance_tokens is None else guidance_tokens
    validate_token_count("guidance_tokens", guidance_tokens, minimum=0, maximum=settings.max_guidance_tokens)
    return guidance_tokens


def generate_params(
    settings: EdgeSettings,
    prompt_input: PromptInput,
    *,
    mode: Mode = "gkt",
    guidance_tokens: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    policy: GuidancePolicy | None = None,
) -> GenerateParams:
    """A validated request; None means "not set" and takes the edge's default. Raises `InvalidArgumentError`."""
    validate_prompt_input(prompt_input, max_prompt_chars=settings.max_prompt_chars)
    sampling = Sampling(
        temperature=settings.default_temperature if temperature is None else temperature,
        top_p=settings.default_top_p if top_p is None else top_p,
        seed=seed,
        stop=tuple(stop),
    )
    validate_sampling(sampling)
    max_tokens = settings.default_max_tokens if max_tokens is None else max_tokens
    validate_token_count("max_tokens", max_tokens, minimum=1, maximum=settings.max_tokens_limit)
    # `max_tokens` bounds the whole answer, guidance included: more guidance than that could never be used.
    guidance_tokens = min(resolve_guidance_tokens(settings, guidance_tokens), max_tokens)
    policy = settings.default_policy() if policy is None else policy
    validate_policy(policy)
    if policy.kind == "verify" and policy.acceptance == "speculative" and sampling.temperature <= 0:
        raise InvalidArgumentError(
            "guidance_policy.acceptance", "speculative acceptance samples: it needs a temperature above 0"
        )
    return GenerateParams(
        input=prompt_input,
        mode=mode,
        guidance_tokens=guidance_tokens,
        max_tokens=max_tokens,
        sampling=sampling,
        policy=policy,
    )
