"""Teacher backend on the project's batched llama.cpp engine (any catalog model or GGUF file)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.backends.llamacpp_verify import verify_on_llama
from cloud_teacher.settings import TeacherSettings
from shared.catalog import DEFAULT_TEACHER
from shared.hardware import server_info
from shared.llama.engine import BatchedLlamaEngine, SamplingParams
from shared.llama.engine_settings import start_engine
from shared.metrics import GktMetrics
from shared.prompt_formats import CompletionFormat, PromptFormat, select_prompt_format
from shared.protocol.domain import (
    GuidanceDelta,
    GuidanceDone,
    GuidanceEvent,
    GuidanceParams,
    ServerInfo,
    TeacherTimings,
)
from shared.protocol.errors import BackendError, NotReadyError
from shared.protocol.verification import VerifyParams, VerifyResult

logger = logging.getLogger(__name__)


class LlamaCppBackend(TeacherBackend):
    """Runs the teacher GGUF in a `BatchedLlamaEngine`: requests from all edges share its slots."""

    name = "llamacpp"

    def __init__(self, settings: TeacherSettings, metrics: GktMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._engine: BatchedLlamaEngine | None = None
        self._format: PromptFormat = CompletionFormat()

    async def start(self) -> None:
        self._engine = await start_engine(
            self._settings,
            self._settings.model or DEFAULT_TEACHER,
            self._metrics.observe_batch,
            on_failure=self.on_failure,
        )
        self._metrics.track_engine(self._engine)
        template = self._engine.model.metadata("tokenizer.chat_template")
        s = self._settings
        self._format = select_prompt_format(
            s.prompt_format, template, s.chat_template_file, max_prompt_chars=s.max_prompt_chars
        )

    async def generate(self, params: GuidanceParams) -> AsyncGenerator[GuidanceEvent, None]:
        if self._engine is None:
            raise NotReadyError("the teacher model is not loaded yet")
        rendered = self._format.render(params.input)
        sampling = SamplingParams.of(params.sampling, params.max_tokens, rendered.stop)
        sequence = self._engine.submit(rendered.pieces, sampling)
        try:
            async for text in sequence.stream():
                # Prompt counts are the engine thread's, set at admission (before any text): safe to read here.
                yield GuidanceDelta(
                    text, sequence.completion_count, len(sequence.tokens), sequence.cached_prompt_tokens
                )
        finally:
            sequence.cancel()  # no-op when it finished; frees the slot when the caller went away
        result = sequence.result
        assert result is not None
        if result.finish_reason == "error":
            raise BackendError(f"the teacher engine failed: {result.error}")
        if result.finish_reason == "cancelled":
            raise NotReadyError("the teacher is shutting down")
        yield GuidanceDone(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            finish_reason="stop" if result.finish_reason == "stop" else "length",
            timings=TeacherTimings(queue_seconds=result.queue_seconds),
            cached_prompt_tokens=result.cached_prompt_tokens,
        )

    async def verify(self, params: VerifyParams) -> VerifyResult:
        if self._engine is None:
            raise NotReadyError("the teacher model is not loaded yet")
        return await verify_on_llama(self._engine, self._format, params)

    def occupancy(self) -> tuple[int, int]:
        if self._engine is None:
            return 0, 0
        return self._engine.occupancy()

    def info(self) -> ServerInfo:
        s = self._settings
        return server_info(
            "teacher",
            s.model or DEFAULT_TEACHER,
            model_file=str(self._engine.model.path) if self._engine else "",
            backend=self.name,
            threads=s.n_threads,
            slots=s.n_slots,
        )

    async def close(self) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
            self._engine = None
