"""Teacher backend on the project's batched llama.cpp engine (the default GGUF: Gemma 3 270M Q4_K_M)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.settings import TeacherSettings
from shared.catalog import DEFAULT_TEACHER, resolve_gguf
from shared.domain import GuidanceDelta, GuidanceDone, GuidanceEvent, GuidanceParams, ServerInfo, TeacherTimings
from shared.errors import BackendError, InvalidArgumentError, NotReadyError, OverloadedError
from shared.hardware import hardware_summary, package_version
from shared.llama_engine import (
    BatchedLlamaEngine,
    EngineClosedError,
    EngineConfig,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
)
from shared.metrics import GktMetrics
from shared.prompts import CompletionFormat, PromptFormat, format_for_template

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
        path = await asyncio.to_thread(resolve_gguf, self._settings.model or DEFAULT_TEACHER)
        config = EngineConfig(
            model_path=path,
            n_slots=self._settings.n_slots,
            n_ctx_per_slot=self._settings.n_ctx_per_slot,
            n_threads=self._settings.n_threads,
            prefill_chunk=self._settings.prefill_chunk,
            max_queue=self._settings.max_queue,
        )
        self._engine = await asyncio.to_thread(BatchedLlamaEngine, config, self._metrics.observe_batch)
        template = self._engine.model.metadata("tokenizer.chat_template")
        if self._settings.prompt_format == "completion":
            template = None
        self._format = format_for_template(template)
        logger.info("llama.cpp teacher loaded from %s (%s slots)", path, config.n_slots)
        # Warm-up: the first decode allocates compute buffers; do it before reporting SERVING.
        await self._engine.submit("Q: 1+1?\nA:", SamplingParams(max_tokens=1)).wait()

    def generate(self, params: GuidanceParams) -> AsyncIterator[GuidanceEvent]:
        return self._generate(params)

    async def _generate(self, params: GuidanceParams) -> AsyncIterator[GuidanceEvent]:
        if self._engine is None:
            raise NotReadyError("the teacher model is not loaded yet")
        rendered = self._format.render(params.input)
        sampling = SamplingParams(
            max_tokens=params.max_guidance_tokens,
            temperature=params.sampling.temperature,
            top_p=params.sampling.top_p,
            seed=params.sampling.seed,
            stop=rendered.stop + params.sampling.stop,
        )
        try:
            sequence = self._engine.submit(rendered.text, sampling)
        except PromptTooLongError as error:
            raise InvalidArgumentError("prompt", str(error)) from None
        except QueueFullError as error:
            raise OverloadedError(str(error)) from None
        except EngineClosedError as error:
            raise NotReadyError(str(error)) from None
        try:
            async for text in sequence.stream():
                yield GuidanceDelta(text)
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

    def load(self) -> tuple[int, int]:
        if self._engine is None:
            return 0, 0
        return self._engine.occupancy()

    def info(self) -> ServerInfo:
        s = self._settings
        return ServerInfo(
            tier="teacher",
            model=s.model or DEFAULT_TEACHER,
            model_file=str(self._engine.model.path) if self._engine else "",
            backend=self.name,
            threads=s.n_threads,
            slots=s.n_slots,
            hardware=hardware_summary(),
            version=package_version(),
        )

    async def close(self) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
            self._engine = None
