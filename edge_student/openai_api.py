"""The edge's OpenAI-compatible HTTP API (FastAPI): a second door to the gRPC service's code path, not a second one.

Each request becomes the `GenerateParams` gRPC would build (`openai_convert` calls the same `generate_params`), is
answered by the same `AnswerFlow` (the same batched student engine and teacher client) and counted by the same
`EdgeServicer.finish` (with api="openai"). Errors come back in OpenAI's JSON error shape, with the HTTP status of
their gRPC code (`http_status_for`), and are counted like gRPC's. Bearer tokens are the gRPC side's. A client that
disconnects frees its student slot and aborts its teacher call at once, as a cancelled gRPC call does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser
from starlette.exceptions import HTTPException
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from edge_student.answer_flow import AnswerFlow
from edge_student.openai_convert import (
    MODELS,
    TranslatedRequest,
    UnknownModelError,
    chat_completion,
    chat_request,
    completion,
    completion_request,
    field_name,
    finish_reason,
    gkt_answer,
    model_card,
    usage_out,
)
from edge_student.openai_types import (
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorDetail,
    ErrorResponse,
    GktDelta,
    ModelCard,
    ModelList,
)
from edge_student.servicer import EdgeServicer
from edge_student.settings import EdgeSettings
from shared.metrics import GktMetrics
from shared.protocol.domain import Answer, AnswerDelta, AnswerEvent
from shared.protocol.errors import (
    ClientGoneError,
    DeadlineExceededError,
    GktError,
    InvalidArgumentError,
    NotReadyError,
)
from shared.server.errors import http_status_for, status_for
from shared.server.request_context import REQUEST_ID_KEY, accept_request_id
from shared.server.security import accepted_tokens, bearer_denial

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
_COUNTED_PATHS = (CHAT_PATH, COMPLETIONS_PATH, MODELS_PATH, HEALTH_PATH)  # the `method` label stays low-cardinality

# OpenAI's error `type` for each status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    499: "cancelled",
    503: "service_unavailable",
    504: "timeout",
}


class _DeniedError(AuthenticationError):
    """Carries the domain error (401 or 403) through Starlette's authentication middleware."""

    def __init__(self, error: GktError) -> None:
        super().__init__(str(error))
        self.error = error


class _BearerTokens(AuthenticationBackend):
    """The gRPC side's bearer tokens, checked by the same function; health optionally exempt, as on gRPC."""

    def __init__(self, tokens: frozenset[str], *, exempt_health: bool) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._exempt_health = exempt_health

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        if self._exempt_health and conn.url.path == HEALTH_PATH:
            return None
        denial = bearer_denial(conn.headers.get("authorization"), self._tokens)
        if denial is not None:
            raise _DeniedError(denial)
        return AuthCredentials(["authenticated"]), SimpleUser("bearer")


class _ClosingStreamingResponse(StreamingResponse):
    """A streamed response that closes its body generator however the response ends.

    A client that disconnects while a chunk is being sent leaves the generator suspended at a `yield`; closing it
    at once (not whenever it is garbage-collected) is what frees the student slot and aborts the teacher call.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # Starlette cancels the stream's task group on disconnect
                await cast(AsyncGenerator[str, None], self.body_iterator).aclose()


class OpenAIApi:
    """The FastAPI app of one edge, over its servicer (answer flow + accounting) and its settings."""

    def __init__(
        self, edge: EdgeServicer, settings: EdgeSettings, metrics: GktMetrics, serving: Callable[[], bool]
    ) -> None:
        self._edge = edge
        self._settings = settings
        self._metrics = metrics
        self._serving = serving  # the gRPC health's SERVING: loaded, warmed and not shutting down
        self._created = int(time.time())
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI(
            title="GKT edge: OpenAI-compatible API",
            description="A facade over the edge's gRPC API (gkt.v1.EdgeService): same student, same validation.",
            docs_url=None,
            redoc_url=None,
        )
        tokens = accepted_tokens(self._settings)
        if tokens:
            app.add_middleware(
                AuthenticationMiddleware,
                backend=_BearerTokens(tokens, exempt_health=self._settings.auth_exempt_health),
                on_error=self._denied,
            )
        app.add_exception_handler(GktError, self._domain_error)
        app.add_exception_handler(RequestValidationError, self._validation_error)
        app.add_exception_handler(HTTPException, self._http_error)
        app.add_exception_handler(Exception, self._unexpected_error)

        @app.post(CHAT_PATH, response_model=None, responses={200: {"model": ChatCompletion}})
        async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
            """Chat completion over the GKT flow; `stream: true` for Server-Sent Events."""
            return await self._answer(request, chat_request(body, self._settings), chat=True)

        @app.post(COMPLETIONS_PATH, response_model=None, responses={200: {"model": Completion}})
        async def completions(body: CompletionRequest, request: Request) -> Response:
            """Text completion of a raw prompt (both models read it as is)."""
            return await self._answer(request, completion_request(body, self._settings), chat=False)

        @app.get(MODELS_PATH)
        async def list_models() -> ModelList:
            """The modes as models: gkt, gkt-student, gkt-teacher (and gkt@K for any K)."""
            return ModelList(data=[model_card(name, self._settings, self._created) for name in MODELS])

        @app.get(MODELS_PATH + "/{name}")
        async def get_model(name: str) -> ModelCard:
            return model_card(name, self._settings, self._created)

        @app.get(HEALTH_PATH, response_model=None)
        async def health() -> Response:
            """200 only while the gRPC health says SERVING (model loaded and warmed, not shutting down)."""
            if self._serving():
                return JSONResponse({"status": "SERVING"})
            return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

        return app

    # ---- answering ---------------------------------------------------------------------------------------------

    async def _answer(self, request: Request, translated: TranslatedRequest, *, chat: bool) -> Response:
        request_id = accept_request_id(request.headers.get(REQUEST_ID_KEY, ""))
        headers = {REQUEST_ID_KEY: request_id}
        flow = self._ready_flow()
        timeout = translated.timeout_seconds
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        events = flow.answer(translated.params, timeout)
        paced = _until(events, deadline)
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        streaming = False
        try:
            if not translated.stream:
                answer = await _unless_disconnected(request, _final(paced))
                self._edge.finish(answer, api="openai")
                build = chat_completion if chat else completion
                return JSONResponse(
                    build(answer, translated, response_id, created).model_dump(mode="json"), 200, headers
                )
            # The first event is awaited before the response starts, so that what fails early (a full queue, a prompt
            # too long for the student) still gets its own HTTP status rather than an error inside a 200 stream.
            first = await _unless_disconnected(request, anext(paced))
            streaming = True
        except InvalidArgumentError as error:
            raise translated.on_wire(error) from None
        finally:
            if not streaming:
                await _close(paced, events)
        body = self._stream(first, paced, events, translated, chat=chat, response_id=response_id, created=created)
        return _ClosingStreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def _stream(
        self,
        first: AnswerEvent,
        paced: AsyncGenerator[AnswerEvent, None],
        events: AsyncGenerator[AnswerEvent, None],
        translated: TranslatedRequest,
        *,
        chat: bool,
        response_id: str,
        created: int,
    ) -> AsyncIterator[str]:
        """Server-Sent Events: one chunk per delta, a last chunk with the finish reason and the `gkt` answer, the
        usage chunk when asked for, then `data: [DONE]`."""
        path = CHAT_PATH if chat else COMPLETIONS_PATH
        exclude = None if translated.include_usage else {"usage"}  # OpenAI sends `usage: null` only when asked

        def frame(chunk: BaseModel) -> str:
            return f"data: {chunk.model_dump_json(exclude=exclude)}\n\n"

        def chunk(**fields: Any) -> BaseModel:
            if chat:
                return ChatCompletionChunk(id=response_id, created=created, model=translated.model, **fields)
            return Completion(id=response_id, created=created, model=translated.model, **fields)

        try:
            if chat:
                yield frame(chunk(choices=[ChatChunkChoice(delta={"role": "assistant", "content": ""})]))
            event = first
            while isinstance(event, AnswerDelta):
                choice = ChatChunkChoice(delta={"content": event.text}) if chat else CompletionChoice(text=event.text)
                yield frame(chunk(choices=[choice], gkt=GktDelta(segment=event.segment)))
                event = await anext(paced)
            answer = event  # the loop ends at the first event that is not a delta: the answer
            self._edge.finish(answer, api="openai")
            reason = finish_reason(answer)
            last = (
                ChatChunkChoice(delta={}, finish_reason=reason)
                if chat
                else CompletionChoice(text="", finish_reason=reason)
            )
            yield frame(chunk(choices=[last], gkt=gkt_answer(answer, translated.params)))
            if translated.include_usage:
                yield frame(chunk(choices=[], usage=usage_out(answer)))
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            self._count_error(path, grpc.StatusCode.CANCELLED)  # the client went away mid-stream
            raise
        except Exception as error:  # the response has started: the error can only be reported in the stream
            yield f"data: {self._error_body(error, path).model_dump_json()}\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await _close(paced, events)

    def _ready_flow(self) -> AnswerFlow:
        flow = self._edge.ready_flow()  # NotReadyError while the student loads
        if not self._serving():
            raise NotReadyError("the edge is not serving (shutting down); retry another replica")
        return flow

    # ---- errors ------------------------------------------------------------------------------------------------

    def _error_body(self, error: BaseException, path: str) -> ErrorResponse:
        """OpenAI's error body for a failure, counted and logged as the gRPC interceptor does."""
        code, message = status_for(error)
        status = http_status_for(code)
        if code is grpc.StatusCode.INTERNAL:
            logger.error("%s failed", path, exc_info=error)
        elif isinstance(error, InvalidArgumentError):
            logger.info("%s: %s: %s", path, code.name, message)
        else:
            logger.warning("%s: %s: %s", path, code.name, message)
        self._count_error(path, code)
        return ErrorResponse(
            error=ErrorDetail(
                message=message,
                type=_ERROR_TYPES.get(status, "server_error"),
                param=getattr(error, "field", None),
                code="model_not_found" if isinstance(error, UnknownModelError) else code.name.lower(),
            )
        )

    def _error_response(self, error: BaseException, path: str) -> JSONResponse:
        status = http_status_for(status_for(error)[0])
        return JSONResponse(self._error_body(error, path).model_dump(mode="json"), status_code=status)

    def _count_error(self, path: str, code: grpc.StatusCode) -> None:
        self._metrics.count_error(path if path in _COUNTED_PATHS else "other", code.name, api="openai")

    def _denied(self, conn: HTTPConnection, error: AuthenticationError) -> Response:
        denial = error.error if isinstance(error, _DeniedError) else GktError(str(error))
        return self._error_response(denial, conn.url.path)

    async def _domain_error(self, request: Request, error: Exception) -> Response:
        return self._error_response(error, request.url.path)

    async def _validation_error(self, request: Request, error: Exception) -> Response:
        """A body that does not parse or does not fit the request model: 400 naming the field, as gRPC does."""
        problems = cast(RequestValidationError, error).errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            invalid = InvalidArgumentError("body", f"is not valid JSON ({first.get('msg', '')})")
        else:
            invalid = InvalidArgumentError(field_name(first.get("loc", ())) or "body", str(first.get("msg", "")))
        return self._error_response(invalid, request.url.path)

    async def _http_error(self, request: Request, error: Exception) -> Response:
        """Unknown paths and methods, in OpenAI's error shape (not counted: they are not requests to this API)."""
        http = cast(HTTPException, error)
        body = ErrorResponse(
            error=ErrorDetail(
                message=str(http.detail), type=_ERROR_TYPES.get(http.status_code, "invalid_request_error")
            )
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=http.status_code, headers=http.headers)

    async def _unexpected_error(self, request: Request, error: Exception) -> Response:
        return self._error_response(error, request.url.path)


async def _until(events: AsyncIterator[AnswerEvent], deadline: float | None) -> AsyncGenerator[AnswerEvent, None]:
    """The answer's events, up to the request's deadline (then `DeadlineExceededError`: 504, as gRPC's deadline)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if deadline is None:
                event = await anext(events)
            else:
                event = await asyncio.wait_for(anext(events), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DeadlineExceededError("the answer did not finish within the request's timeout_seconds") from None
        yield event


async def _final(events: AsyncIterator[AnswerEvent]) -> Answer:
    async for event in events:
        if isinstance(event, Answer):
            return event
    raise RuntimeError("the answer flow ended without an answer")


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`; if the client disconnects first, cancels it (the answer flow then frees the student slot and
    aborts the teacher call) and raises `ClientGoneError`."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished = task.done()
        task.cancel()  # no-op once done
        watch.cancel()
        await asyncio.wait((task, watch))  # the cancelled work cleans up (frees its slot) before the caller goes on
    if finished:
        return task.result()
    raise ClientGoneError("the client disconnected before the answer was complete")


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _close(*generators: AsyncGenerator[AnswerEvent, None]) -> None:
    """Closes the wrapper, then the answer flow itself (its cleanup cancels the student's sequence)."""
    for generator in generators:
        await generator.aclose()
