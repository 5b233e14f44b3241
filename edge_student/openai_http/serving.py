"""What every answering endpoint of the HTTP door does: ask the edge service, within the request's deadline and
while its client stays, and answer in one JSON body or as Server-Sent Events. The endpoints fill in their shapes."""

from __future__ import annotations

import abc
import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from edge_student.openai_convert import TranslatedRequest, finish_reason, gkt_answer, usage_out
from edge_student.openai_http.errors import OpenAIErrors
from edge_student.openai_http.lifecycle import (
    ClosingStreamingResponse,
    close,
    final_answer,
    unless_disconnected,
    within_deadline,
)
from edge_student.openai_types import FinishReason, GktDelta
from edge_student.service import EdgeService
from shared.protocol.domain import Answer, AnswerDelta, AnswerEvent
from shared.protocol.errors import InvalidArgumentError
from shared.server.request_context import REQUEST_ID_KEY, accept_request_id, outcome_counted


class OpenAIServing(abc.ABC):
    """One answering endpoint over the edge service: the answer flow, counted by `EdgeService.finish` (api="openai")."""

    path: ClassVar[str]  # the endpoint's path (errors are counted under it)
    id_prefix: ClassVar[str]  # OpenAI's response id prefix

    def __init__(self, service: EdgeService, errors: OpenAIErrors) -> None:
        self._service = service
        self._settings = service.settings
        self._errors = errors

    @abc.abstractmethod
    def response(self, answer: Answer, translated: TranslatedRequest, response_id: str, created: int) -> BaseModel:
        """The whole answer in one body."""

    @abc.abstractmethod
    def chunk(self, translated: TranslatedRequest, response_id: str, created: int, **fields: Any) -> BaseModel:
        """One streamed chunk with the given fields."""

    @abc.abstractmethod
    def delta_choice(self, text: str) -> BaseModel:
        """The choice of a chunk that carries new text."""

    @abc.abstractmethod
    def last_choice(self, reason: FinishReason) -> BaseModel:
        """The choice of the chunk that ends the answer."""

    def opening_choices(self) -> list[BaseModel] | None:
        """The choices of a chunk sent before any text (None: no such chunk)."""
        return None

    async def answer(self, request: Request, translated: TranslatedRequest) -> Response:
        """The request answered in one body, or streamed when it asks for `stream`."""
        request_id = accept_request_id(request.headers.get(REQUEST_ID_KEY, ""))
        headers = {REQUEST_ID_KEY: request_id}
        timeout = translated.timeout_seconds
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        events = self._service.answer(translated.params, timeout, while_serving=True)
        paced = within_deadline(events, deadline)
        response_id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        created = int(time.time())
        streaming = False
        try:
            if not translated.stream:
                answer = await unless_disconnected(request, final_answer(paced))
                self._service.finish(answer, api="openai")
                return JSONResponse(
                    self.response(answer, translated, response_id, created).model_dump(mode="json"), 200, headers
                )
            # The first event is awaited before the response starts, so that what fails early (a full queue, a prompt
            # too long for the student) still gets its own HTTP status rather than an error inside a 200 stream.
            first = await unless_disconnected(request, anext(paced))
            streaming = True
        except InvalidArgumentError as error:
            raise translated.on_wire(error) from None
        finally:
            if not streaming:
                await close(paced, events)
        body = self._stream(first, paced, events, translated, response_id=response_id, created=created)
        return ClosingStreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def _stream(
        self,
        first: AnswerEvent,
        paced: AsyncGenerator[AnswerEvent, None],
        events: AsyncGenerator[AnswerEvent, None],
        translated: TranslatedRequest,
        *,
        response_id: str,
        created: int,
    ) -> AsyncIterator[str]:
        """Server-Sent Events: one chunk per delta, a last chunk with the finish reason and the `gkt` answer, the
        usage chunk when asked for, then `data: [DONE]`."""
        exclude = None if translated.include_usage else {"usage"}  # OpenAI sends `usage: null` only when asked

        def frame(chunk: BaseModel) -> str:
            return f"data: {chunk.model_dump_json(exclude=exclude)}\n\n"

        def chunk(**fields: Any) -> BaseModel:
            return self.chunk(translated, response_id, created, **fields)

        try:
            opening = self.opening_choices()
            if opening is not None:
                yield frame(chunk(choices=opening))
            event = first
            while isinstance(event, AnswerDelta):
                yield frame(chunk(choices=[self.delta_choice(event.text)], gkt=GktDelta(segment=event.segment)))
                event = await anext(paced)
            answer = event  # the loop ends at the first event that is not a delta: the answer
            self._service.finish(answer, api="openai")
            last = self.last_choice(finish_reason(answer))
            yield frame(chunk(choices=[last], gkt=gkt_answer(answer)))
            if translated.include_usage:
                yield frame(chunk(choices=[], usage=usage_out(answer)))
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            if not outcome_counted.get():  # gone mid-stream; after its answer was counted, one outcome: the success
                self._errors.count_cancelled(self.path)
            raise
        except Exception as error:  # the response has started: the error can only be reported in the stream
            yield f"data: {self._errors.body(error, self.path).model_dump_json()}\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await close(paced, events)
