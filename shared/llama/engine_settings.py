"""The batched llama.cpp engine's knobs, declared once for every tier that runs it, and how to start it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pydantic import BaseModel, Field

from shared.catalog import resolve_gguf
from shared.llama.engine import BatchedLlamaEngine
from shared.llama.engine_types import EngineConfig, SamplingParams

logger = logging.getLogger(__name__)


class EngineSettings(BaseModel):
    """Mixed into a tier's settings (the edge's, and the teacher's for its llamacpp backend)."""

    # The defaults are the engine's own (`EngineConfig`), declared once there.
    n_slots: int = Field(
        EngineConfig.n_slots, ge=1, le=64, description="llama.cpp engine: requests decoded together in one batch."
    )
    n_ctx_per_slot: int = Field(
        EngineConfig.n_ctx_per_slot,
        ge=64,
        description="llama.cpp engine: context tokens per request (prompt + guidance + answer).",
    )
    n_threads: int = Field(
        EngineConfig.n_threads,
        ge=1,
        description="llama.cpp engine: CPU threads (the default leaves a core to a co-located other tier).",
    )
    prefill_chunk: int = Field(
        EngineConfig.prefill_chunk, ge=8, description="llama.cpp engine: most prompt tokens prefilled per step."
    )
    max_queue: int = Field(
        EngineConfig.max_queue,
        ge=0,
        description="llama.cpp engine: requests that may wait for a free slot; beyond, RESOURCE_EXHAUSTED.",
    )


async def start_engine(
    settings: EngineSettings,
    model: str,
    on_batch: Callable[[int], None] | None = None,
    on_failure: Callable[[BaseException], None] | None = None,
) -> BatchedLlamaEngine:
    """Resolves `model` (a catalog name or a GGUF path), loads it into a batched engine and warms it up.

    The warm-up decode allocates llama.cpp's compute buffers, so the first real request does not pay for it.
    `on_batch` hears each step's batch size (the metrics' histogram); `on_failure` is told (from the engine thread)
    if the engine dies.
    """
    path = await asyncio.to_thread(resolve_gguf, model)
    config = EngineConfig(
        model_path=path,
        n_slots=settings.n_slots,
        n_ctx_per_slot=settings.n_ctx_per_slot,
        n_threads=settings.n_threads,
        prefill_chunk=settings.prefill_chunk,
        max_queue=settings.max_queue,
    )
    engine = await asyncio.to_thread(BatchedLlamaEngine, config, on_batch, on_failure)
    await engine.submit("Hello", SamplingParams(max_tokens=1)).wait()
    logger.info("llama.cpp engine: %s, %d slots, %d thread(s)", path, config.n_slots, config.n_threads)
    return engine
