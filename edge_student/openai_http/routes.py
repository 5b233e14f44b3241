"""The edge's OpenAI-compatible HTTP API (FastAPI): a second door to the edge service, beside the gRPC servicer.

Each request becomes the `GenerateParams` gRPC would build (`openai_convert` calls the same `generate_params`), is
answered by the same `EdgeService` (the same batched student engine and teacher client) and counted by the same
`EdgeService.finish` (with api="openai"). Errors come back in OpenAI's JSON error shape, with the HTTP status of
their gRPC code (`errors.py`), and are counted like gRPC's. Bearer tokens are the gRPC side's. A client that
disconnects frees its student slot and aborts its teacher call at once, as a cancelled gRPC call does.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.authentication import AuthenticationMiddleware

from edge_student.openai_http.auth import BearerTokens
from edge_student.openai_http.errors import OpenAIErrors
from edge_student.openai_http.paths import CHAT_PATH, COMPLETIONS_PATH, HEALTH_PATH, MODELS_PATH
from edge_student.openai_http.serving_chat import OpenAIServingChat
from edge_student.openai_http.serving_completions import OpenAIServingCompletion
from edge_student.openai_http.serving_models import OpenAIServingModels
from edge_student.openai_types import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from edge_student.service import EdgeService
from shared.metrics import GktMetrics
from shared.protocol.errors import GktError
from shared.server.security import accepted_tokens


class OpenAIApi:
    """The FastAPI app of one edge, over its service."""

    def __init__(self, service: EdgeService, metrics: GktMetrics) -> None:
        self._service = service
        self._settings = service.settings
        self._errors = OpenAIErrors(metrics)
        self._chat = OpenAIServingChat(service, self._errors)
        self._completions = OpenAIServingCompletion(service, self._errors)
        self._models = OpenAIServingModels(service.settings)
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
                backend=BearerTokens(tokens, exempt_health=self._settings.auth_exempt_health),
                on_error=self._errors.denied,
            )
        app.add_exception_handler(GktError, self._errors.domain_error)
        app.add_exception_handler(RequestValidationError, self._errors.validation_error)
        app.add_exception_handler(HTTPException, self._errors.http_error)
        app.add_exception_handler(Exception, self._errors.unexpected_error)

        @app.post(CHAT_PATH, response_model=None, responses={200: {"model": ChatCompletion}})
        async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
            """Chat completion over the GKT flow; `stream: true` for Server-Sent Events."""
            return await self._chat.create(body, request)

        @app.post(COMPLETIONS_PATH, response_model=None, responses={200: {"model": Completion}})
        async def completions(body: CompletionRequest, request: Request) -> Response:
            """Text completion of a raw prompt (both models read it as is)."""
            return await self._completions.create(body, request)

        @app.get(MODELS_PATH)
        async def list_models() -> ModelList:
            """The modes as models: gkt, gkt-student, gkt-teacher (and gkt@K for any K)."""
            return self._models.list()

        @app.get(MODELS_PATH + "/{name}")
        async def get_model(name: str) -> ModelCard:
            return self._models.get(name)

        @app.get(HEALTH_PATH, response_model=None)
        async def health() -> Response:
            """200 only while the gRPC health says SERVING (model loaded and warmed, not shutting down)."""
            if self._service.serving():
                return JSONResponse({"status": "SERVING"})
            return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

        return app
