"""`POST /v1/chat/completions`: chat messages in, the answer as an assistant message (or its chunks) out."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from edge_student.openai_convert import TranslatedRequest, chat_completion, chat_request
from edge_student.openai_http.paths import CHAT_PATH
from edge_student.openai_http.serving import OpenAIServing
from edge_student.openai_types import ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, FinishReason
from shared.protocol.domain import Answer


class OpenAIServingChat(OpenAIServing):
    """Chat completion over the GKT flow."""

    path = CHAT_PATH
    id_prefix = "chatcmpl"

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        return await self.answer(request, chat_request(body, self._settings))

    def response(self, answer: Answer, translated: TranslatedRequest, response_id: str, created: int) -> BaseModel:
        return chat_completion(answer, translated, response_id, created)

    def chunk(self, translated: TranslatedRequest, response_id: str, created: int, **fields: Any) -> BaseModel:
        return ChatCompletionChunk(id=response_id, created=created, model=translated.model, **fields)

    def opening_choices(self) -> list[BaseModel] | None:
        return [ChatChunkChoice(delta={"role": "assistant", "content": ""})]

    def delta_choice(self, text: str) -> BaseModel:
        return ChatChunkChoice(delta={"content": text})

    def last_choice(self, reason: FinishReason) -> BaseModel:
        return ChatChunkChoice(delta={}, finish_reason=reason)
