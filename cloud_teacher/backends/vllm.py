"""Teacher backend on vLLM's async engine (AsyncLLM): continuous batching across every edge, delta streaming, abort."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.backends.vllm_requests import encode_pieces, queued_seconds
from cloud_teacher.backends.vllm_verify import VllmVerifier
from cloud_teacher.settings import TeacherSettings
from shared.catalog import CATALOG, DEFAULT_TEACHER, cache_dir
from shared.hardware import has_cuda, server_info
from shared.prompt_formats import CompletionFormat, PromptFormat, select_prompt_format
from shared.protocol.domain import (
    FinishReason,
    GuidanceDelta,
    GuidanceDone,
    GuidanceEvent,
    GuidanceParams,
    ServerInfo,
    TeacherTimings,
)
from shared.protocol.errors import BackendError, InvalidArgumentError, NotReadyError
from shared.protocol.verification import VerifyParams, VerifyResult

logger = logging.getLogger(__name__)


def configure_vllm_environment(settings: TeacherSettings) -> None:
    """Env vLLM reads at import time: CPU device and KV cache size, no hub, no telemetry, project-owned caches.

    Set before vLLM is imported; the engine-core process it spawns inherits them.
    """
    root = cache_dir() / "vllm"
    folders = {
        "VLLM_CACHE_ROOT": root / "cache",
        "XDG_CACHE_HOME": root / "xdg",
        "HF_HOME": root / "hf",
        "TORCHINDUCTOR_CACHE_DIR": root / "inductor",
        "TMPDIR": root / "tmp",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(name, str(folder))
    tempfile.tempdir = None  # re-read TMPDIR: sockets and temp files go to the project's folder, not /tmp
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    if not has_cuda():
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.kv_cache_space_gib))))


def resolve_model(settings: TeacherSettings) -> str:
    """What vLLM loads: a catalog name's converted folder (converted here once if need be), else the configured
    Hugging Face directory or model id as is."""
    name = settings.model or DEFAULT_TEACHER
    if name in CATALOG:
        from cloud_teacher.hf_conversion import prepare_for_vllm

        return str(prepare_for_vllm(CATALOG[name], install=False))
    return name


def checkpoint_dtype(model: str) -> str:
    """The dtype a local Hugging Face folder was saved in ("auto" when unknown).

    vLLM's own "auto" runs float32 checkpoints in bfloat16 on CPU, which on CPUs without native bf16 is emulated
    and slower than float32 (measured here on AVX2: 2.3 vs 6.1 tokens/s for 4 streams) and changes answers.
    """
    config = Path(model) / "config.json"
    if not config.is_file():
        return "auto"
    try:
        data = json.loads(config.read_text())
    except ValueError:
        return "auto"
    dtype = data.get("dtype") or data.get("torch_dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"


class VllmBackend(TeacherBackend):
    """One AsyncLLM engine in this process; every StreamGuidance call is one vLLM request."""

    name = "vllm"

    def __init__(self, settings: TeacherSettings) -> None:
        self._settings = settings
        self._engine: Any = None
        self._tokenizer: Any = None
        self._format: PromptFormat = CompletionFormat()
        self._running = 0
        self._max_model_len = settings.max_model_len
        self._model_file = ""
        self._dtype = ""
        self._verifier: VllmVerifier | None = None

    async def start(self) -> None:
        configure_vllm_environment(self._settings)
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        model = resolve_model(s)
        self._model_file = model
        args = AsyncEngineArgs(
            model=model,
            dtype=cast(Any, checkpoint_dtype(model) if s.dtype == "auto" else s.dtype),
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
            tensor_parallel_size=s.tensor_parallel_size,
            pipeline_parallel_size=s.pipeline_parallel_size,
            gpu_memory_utilization=s.gpu_memory_utilization,
            enforce_eager=s.enforce_eager,
            block_size=s.block_size,
            disable_log_stats=False,  # keeps vLLM's own vllm:* Prometheus metrics
            seed=0,
        )
        logger.info("starting vLLM on %s (dtype %s)", model, s.dtype)
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        self._dtype = str(self._engine.model_config.dtype).removeprefix("torch.")
        self._format = select_prompt_format(
            s.prompt_format,
            getattr(self._tokenizer, "chat_template", None),
            s.chat_template_file,
            max_prompt_chars=s.max_prompt_chars,
        )
        self._verifier = VllmVerifier(self._engine, self._tokenizer, self._format, self._max_model_len)
        # Warm-up before SERVING: the first request pays for graph/kernel set-up.
        async for _ in self.generate(_warmup_params()):
            pass

    async def generate(self, params: GuidanceParams) -> AsyncGenerator[GuidanceEvent, None]:
        if self._engine is None:
            raise NotReadyError("the vLLM engine is not started yet")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        # Rendering and tokenising a long conversation take milliseconds: off the loop that serves every stream.
        rendered = await asyncio.to_thread(self._format.render, params.input)
        prompt_ids = await asyncio.to_thread(encode_pieces, self._tokenizer, rendered.pieces)
        if len(prompt_ids) + params.max_tokens > self._max_model_len:
            raise InvalidArgumentError(
                "prompt",
                f"{len(prompt_ids)} prompt tokens + max_tokens {params.max_tokens} exceed the "
                f"teacher's max model length {self._max_model_len}",
            )
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.sampling.temperature,
            top_p=params.sampling.top_p,
            seed=params.sampling.seed,
            stop=list(rendered.stop + params.sampling.stop) or None,
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = uuid.uuid4().hex
        finished = False
        completion_tokens = 0
        cached_prompt_tokens = 0
        queue_seconds = 0.0
        finish_reason: FinishReason = "length"
        self._running += 1
        try:
            async for output in self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id):
                completion = output.outputs[0]
                completion_tokens += len(completion.token_ids)
                cached_prompt_tokens = output.num_cached_tokens or cached_prompt_tokens
                queue_seconds = queue_seconds or queued_seconds(output.metrics)
                if completion.text:
                    yield GuidanceDelta(completion.text, completion_tokens, len(prompt_ids), cached_prompt_tokens)
                if output.finished:
                    finished = True
                    finish_reason = "stop" if completion.finish_reason == "stop" else "length"
        except (InvalidArgumentError, NotReadyError):
            raise
        except Exception as error:  # the engine died or rejected the request
            raise self._engine_error(error) from error
        finally:
            self._running -= 1
            if not finished and self._engine is not None:
                # The edge went away or its deadline passed: stop generating for it now.
                await self._engine.abort(request_id)
        yield GuidanceDone(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
            timings=TeacherTimings(queue_seconds=queue_seconds),
            cached_prompt_tokens=cached_prompt_tokens,
        )

    async def verify(self, params: VerifyParams) -> VerifyResult:
        if self._engine is None or self._verifier is None:
            raise NotReadyError("the vLLM engine is not started yet")
        self._running += 1
        try:
            return await self._verifier.verify(params)
        except (InvalidArgumentError, NotReadyError):
            raise
        except Exception as error:  # the engine died or rejected the request
            raise self._engine_error(error) from error
        finally:
            self._running -= 1

    def _engine_error(self, error: Exception) -> BackendError:
        """What an engine failure means to the caller; a dead engine also turns the server's health NOT_SERVING."""
        if self._engine is not None and getattr(self._engine, "errored", False):
            if self.on_failure is not None:
                self.on_failure(error)
            return BackendError("the vLLM engine has failed; the teacher must be restarted")
        return BackendError(f"vLLM failed: {error}")

    def occupancy(self) -> tuple[int, int]:
        return self._running, 0

    def info(self) -> ServerInfo:
        s = self._settings
        return server_info(
            "teacher",
            s.model or DEFAULT_TEACHER,
            model_file=self._model_file,
            backend=self.name,
            dtype=self._dtype,
            threads=0,  # vLLM's CPU worker binds its own cores (one per rank by default)
            slots=s.max_num_seqs,
        )

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.shutdown()


def _warmup_params() -> GuidanceParams:
    from shared.protocol.domain import PromptInput, Sampling

    return GuidanceParams(input=PromptInput(prompt="Q: 1+1?\nA:"), max_tokens=2, sampling=Sampling(0.0, 1.0, 0))
