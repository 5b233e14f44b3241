"""Teacher-verified drafting over an OpenAI-compatible `/v1/completions` server, where it echoes prompt log-probs.

One request with `echo` and `logprobs` returns the server's tokens of the prompt (which ends with the draft), their
character offsets, log-probabilities and top choices, plus one generated token. Tokens arrive as strings, so the top
choice is compared by its text. A server that does not return them answers UNIMPLEMENTED, which the edge turns into
an unverified (degraded) answer.
"""

from __future__ import annotations

from typing import Any

import httpx

from cloud_teacher.acceptance import (
    TeacherPosition,
    accepted_chars,
    decide,
    seeded_rng,
    student_probabilities,
    verdict,
)
from shared.prompt_formats import PromptFormat
from shared.protocol.errors import BackendError, InvalidArgumentError, OverloadedError, UnimplementedError
from shared.protocol.verification import MAX_DRAFT_TOKENS, VerifyParams, VerifyResult, VerifyTimings, VerifyUsage

# The most top choices the OpenAI API returns per token.
OPENAI_TOP_LOGPROBS = 5


class _Vocabulary:
    """Ids for token strings within one response (the API names tokens by their text)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.texts: list[str] = []

    def id(self, text: str) -> int:
        if text not in self._ids:
            self._ids[text] = len(self.texts)
            self.texts.append(text)
        return self._ids[text]


def _refused(response: httpx.Response) -> Exception:
    detail = response.text[:300]
    if response.status_code == 429:
        return OverloadedError(f"the teacher server is overloaded: {detail}")
    if response.status_code in (400, 422) and not any(word in detail.lower() for word in ("logprob", "echo")):
        return InvalidArgumentError("draft_text", f"the teacher server rejected the verification: {detail}")
    if response.status_code in (400, 404, 422, 500, 501):
        return UnimplementedError(
            f"the OpenAI-compatible teacher server cannot score a draft (echo + logprobs): {detail}"
        )
    return BackendError(f"the teacher server answered HTTP {response.status_code}: {detail}")


async def _complete(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = await client.post("/completions", json=body)
    except httpx.HTTPError as error:
        raise BackendError(f"the OpenAI-compatible server failed: {error}") from error
    if response.status_code != 200:
        raise _refused(response)
    try:
        data: dict[str, Any] = response.json()
        return data
    except ValueError as error:
        raise BackendError("the OpenAI-compatible server sent no JSON") from error


async def verify_over_openai(
    client: httpx.AsyncClient, model: str, prompt_format: PromptFormat, params: VerifyParams
) -> VerifyResult:
    rendered = prompt_format.render(params.scored_input)
    text = rendered.text
    draft_start = len(text) - len(params.draft_text)
    sampling = params.sampling
    speculative = params.acceptance.rule == "speculative"
    body: dict[str, Any] = {
        "model": model,
        "prompt": text,
        "max_tokens": 1,  # the bonus token after a fully accepted draft
        "echo": True,
        "logprobs": OPENAI_TOP_LOGPROBS if speculative else 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    data = await _complete(client, body)
    choice = (data.get("choices") or [{}])[0]
    logprobs = choice.get("logprobs") or {}
    tokens: list[str] = logprobs.get("tokens") or []
    offsets: list[int] = logprobs.get("text_offset") or []
    token_logprobs: list[float | None] = logprobs.get("token_logprobs") or []
    tops: list[dict[str, float] | None] = logprobs.get("top_logprobs") or []
    if not tokens or not (len(tokens) == len(offsets) == len(token_logprobs) == len(tops)) or offsets[0] != 0:
        raise UnimplementedError("the OpenAI-compatible teacher server does not echo prompt log-probs")
    n_prompt = sum(offset < len(text) for offset in offsets)
    ends = [*offsets[1:n_prompt], len(text)]
    first = next(i for i in range(n_prompt) if ends[i] > draft_start)
    if n_prompt - first > MAX_DRAFT_TOKENS:
        raise InvalidArgumentError(
            "draft_text", f"is {n_prompt - first} teacher tokens; the limit is {MAX_DRAFT_TOKENS}"
        )
    vocabulary = _Vocabulary()
    positions: list[TeacherPosition] = []
    for index in range(first, n_prompt):
        logprob, top = token_logprobs[index], tops[index]
        if logprob is None or not top:
            raise UnimplementedError("the OpenAI-compatible teacher server does not score every prompt token")
        ranked = sorted(top.items(), key=lambda item: -item[1])
        positions.append(
            TeacherPosition(
                vocabulary.id(tokens[index]),
                max(0, offsets[index] - draft_start),
                ends[index] - draft_start,
                float(logprob),
                tuple((vocabulary.id(t), float(lp)) for t, lp in ranked),
            )
        )
    q = student_probabilities(positions, params.acceptance.draft_pieces) if speculative else []
    decision = decide(positions, params.acceptance, sampling, seeded_rng(sampling, len(params.accepted_text)), q)
    kept = accepted_chars(positions, decision, len(params.draft_text))
    usage = data.get("usage") or {}
    prompt_tokens, cached = int(usage.get("prompt_tokens", n_prompt)), _cached(usage)
    passes, generated = 1, 1
    if decision.correction is None:
        correction = str(choice.get("text", ""))[len(text) :]
        ended = choice.get("finish_reason") == "stop"
        generated = int(usage.get("completion_tokens", 1))
    else:
        correction = vocabulary.texts[decision.correction]
        ended = correction == ""  # a control token (end of text or turn) has no text
    if not ended and generated < params.correction_tokens:
        burst: dict[str, Any] = {
            "model": model,
            "prompt": text[: draft_start + kept] + correction,
            "max_tokens": params.correction_tokens - generated,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if stop := list(rendered.stop + sampling.stop):
            burst["stop"] = stop
        if sampling.seed is not None:
            burst["seed"] = sampling.seed
        more = await _complete(client, burst)
        more_choice = (more.get("choices") or [{}])[0]
        more_usage = more.get("usage") or {}
        correction += str(more_choice.get("text", ""))
        ended = more_choice.get("finish_reason") == "stop"
        generated += int(more_usage.get("completion_tokens", 0))
        prompt_tokens += int(more_usage.get("prompt_tokens", 0))
        cached += _cached(more_usage)
        passes += 1
    return verdict(
        params,
        rendered.stop + sampling.stop,
        positions,
        decision,
        kept,
        correction,
        ended,
        VerifyUsage(prompt_tokens, cached, len(positions), generated, passes),
        VerifyTimings(),
    )


def _cached(usage: dict[str, Any]) -> int:
    details: dict[str, Any] = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)
