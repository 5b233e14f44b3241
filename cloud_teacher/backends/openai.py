"""Teacher backend on any OpenAI-compatible `/v1/completions` server (vLLM's, llama.cpp's, or a hosted API)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.backends.openai_verify import verify_over_openai
from cloud_teacher.settings import TeacherSettings
from shared.hardware import server_info
from shared.prompt_formats import select_prompt_format
from shared.protocol.domain import (
    GuidanceDelta,
    GuidanceDone,
    GuidanceEvent,
    GuidanceParams,
    PromptInput,
    ServerInfo,
    TeacherTimings,
)
from shared.protocol.errors import BackendError, InvalidArgumentError, NotReadyError, OverloadedError
from shared.protocol.verification import VerifyParams, VerifyResult
from shared.server.secrets import read_secret

logger = logging.getLogger(__name__)

# Control-token spellings of the common model families (ChatML and Llama 3 `<|...|>`, Llama 2 / Mistral `<s>` and
# `[INST]`, Gemma's turn markers). A completion endpoint takes text, and vLLM's and llama.cpp's servers parse such
# spellings into control tokens: user text could open a new role. This backend cannot send token ids (it does not
# know the remote model's tokenizer), so it refuses them in everything users and models wrote.
CONTROL_TOKEN_TEXT = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?s>|\[/?INST\]|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>")


def refuse_control_token_text(prompt_input: PromptInput) -> None:
    """Raises `InvalidArgumentError` naming the first field whose text spells a control token."""
    fields = [("prompt", prompt_input.prompt), ("system_prompt", prompt_input.system_prompt)]
    fields += [(f"messages[{i}].content", m.content) for i, m in enumerate(prompt_input.messages)]
    for name, text in fields:
        if found := CONTROL_TOKEN_TEXT.search(text):
            raise InvalidArgumentError(
                name,
                f"contains {found.group()!r}, which the teacher's OpenAI-compatible server would read as a control "
                "token; this teacher backend does not take such text",
            )


class OpenAIBackend(TeacherBackend):
    """Streams `/v1/completions` with `max_tokens=K`; closing the stream drops the HTTP connection, which
    OpenAI-compatible servers treat as an abort."""

    name = "openai"

    def __init__(self, settings: TeacherSettings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None
        self._model = settings.model or ""
        # Completion endpoints take text, and the remote model's chat template is not known here: 'auto' renders
        # chat messages in the paper's Q/A transcript, 'chat' is refused.
        self._format = select_prompt_format(
            settings.prompt_format, None, settings.chat_template_file, max_prompt_chars=settings.max_prompt_chars
        )
        self._running = 0

    async def start(self) -> None:
        key = read_secret(self._settings.openai_api_key, self._settings.openai_api_key_file)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=self._settings.openai_base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self._settings.openai_timeout_seconds, connect=10.0),
        )
        try:
            response = await self._client.get("/models")
            response.raise_for_status()
            models = [m["id"] for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            url = self._settings.openai_base_url
            raise BackendError(f"the OpenAI-compatible server at {url} failed: {error}") from error
        if not self._model:
            if not models:
                raise BackendError("the server lists no models; set --model")
            self._model = models[0]
        logger.info("OpenAI-compatible teacher: %s at %s", self._model, self._settings.openai_base_url)

    async def generate(self, params: GuidanceParams) -> AsyncGenerator[GuidanceEvent, None]:
        if self._client is None:
            raise NotReadyError("the OpenAI backend is not started yet")
        refuse_control_token_text(params.input)
        rendered = self._format.render(params.input)
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": rendered.text,
            "max_tokens": params.max_tokens,
            "temperature": params.sampling.temperature,
            "top_p": params.sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop := list(rendered.stop + params.sampling.stop):
            body["stop"] = stop
        if params.sampling.seed is not None:
            body["seed"] = params.sampling.seed
        chunks = 0
        queue_seconds = 0.0
        usage: dict[str, Any] = {}
        finish_reason = "length"
        self._running += 1
        try:
            sent = time.monotonic()
            async with self._client.stream("POST", "/completions", json=body) as response:
                # A remote server reports no queue time: the wait until its response headers is the closest.
                queue_seconds = time.monotonic() - sent
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line.removeprefix("data:").strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or ():
                        if text := choice.get("text"):
                            chunks += 1
                            yield GuidanceDelta(text, chunks)  # one streamed chunk is one token
                        if choice.get("finish_reason"):
                            finish_reason = "stop" if choice["finish_reason"] == "stop" else "length"
        except httpx.HTTPError as error:
            raise BackendError(f"the OpenAI-compatible server failed: {error}") from error
        finally:
            self._running -= 1
        # Servers that do not report usage in streams: one streamed chunk is one token on every server we know.
        details: dict[str, Any] = usage.get("prompt_tokens_details") or {}
        yield GuidanceDone(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", chunks)),
            finish_reason=finish_reason,  # type: ignore[arg-type]
            timings=TeacherTimings(queue_seconds=queue_seconds),
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
        )

    async def verify(self, params: VerifyParams) -> VerifyResult:
        if self._client is None:
            raise NotReadyError("the OpenAI backend is not started yet")
        self._running += 1
        try:
            return await verify_over_openai(self._client, self._model, self._format, params)
        finally:
            self._running -= 1

    def occupancy(self) -> tuple[int, int]:
        return self._running, 0

    def info(self) -> ServerInfo:
        return server_info(
            "teacher",
            self._settings.model or self._model,
            model_file=f"{self._model} at {self._settings.openai_base_url}",
            backend=self.name,
            hardware="remote (the OpenAI-compatible server's)",
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _http_error(response: httpx.Response) -> Exception:
    detail = response.text[:300]
    if response.status_code in (400, 422):
        return InvalidArgumentError("prompt", f"the teacher server rejected the request: {detail}")
    if response.status_code == 429:
        return OverloadedError(f"the teacher server is overloaded: {detail}")
    return BackendError(f"the teacher server answered HTTP {response.status_code}: {detail}")
