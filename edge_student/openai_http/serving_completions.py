"""`POST /v1/completions`: a raw prompt in (both models read it as is), its continuation (or its chunks) out."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from edge_student.openai_convert import TranslatedRequest, completion, completion_request
from edge_student.openai_http.paths import COMPLETIONS_PATH
from edge_student.openai_http.serving import OpenAIServing
from edge_student.openai_types import Completion, CompletionChoice, CompletionRequest, FinishReason
from shared.protocol.domain import Answer


class OpenAIServingCompletion(OpenAIServing):
    """Text completion over the GKT flow."""

    path = COMPLETIONS_PATH
    id_prefix = "cmpl"

    async def create(self, body: CompletionRequest, request: Request) -> Response:
        return await self.answer(request, completion_request(body, self._settings))

    def response(self, answer: Answer, translated: TranslatedRequest, response_id: str, created: int) -> BaseModel:
        return completion(answer, translated, response_id, created)

    def chunk(self, translated: TranslatedRequest, response_id: str, created: int, **fields: Any) -> BaseModel:
        return Completion(id=response_id, created=created, model=translated.model, **fields)

    def delta_choice(self, text: str) -> BaseModel:
        return CompletionChoice(text=text)

    def last_choice(self, reason: FinishReason) -> BaseModel:
        return CompletionChoice(text="", finish_reason=reason)
