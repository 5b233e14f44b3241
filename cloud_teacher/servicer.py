"""TeacherService over gRPC: decode the request, stream the backend's guidance, encode, count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.settings import TeacherSettings
from shared.convert import guidance_done_to_pb, prompt_input_from_pb, sampling_from_pb, server_info_to_pb
from shared.domain import GuidanceDelta, GuidanceDone, GuidanceParams, TeacherTimings
from shared.errors import InvalidArgumentError, status_for
from shared.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from shared.metrics import GktMetrics
from shared.request_context import bind_request_id, caller_mode
from shared.validation import validate_prompt_input, validate_sampling, validate_token_count

logger = logging.getLogger(__name__)


class TeacherServicer(teacher_pb2_grpc.TeacherServiceServicer):
    """Thin: every decision about generation lives in the backend."""

    def __init__(self, backend: TeacherBackend, settings: TeacherSettings, metrics: GktMetrics) -> None:
        self._backend = backend
        self._settings = settings
        self._metrics = metrics
        self._prices = settings.prices()

    def params_from_pb(self, request: teacher_pb2.GuidanceRequest) -> GuidanceParams:
        """Decodes and validates a request (raises `InvalidArgumentError` naming the field)."""
        prompt_input = prompt_input_from_pb(request)
        validate_prompt_input(prompt_input, max_prompt_chars=self._settings.max_prompt_chars)
        validate_token_count(
            "max_guidance_tokens", request.max_guidance_tokens, minimum=1, maximum=self._settings.max_guidance_tokens
        )
        sampling = sampling_from_pb(
            request, temperature=self._settings.default_temperature, top_p=self._settings.default_top_p
        )
        validate_sampling(sampling)
        return GuidanceParams(input=prompt_input, max_guidance_tokens=request.max_guidance_tokens, sampling=sampling)

    async def StreamGuidance(  # noqa: N802 (gRPC method name)
        self, request: teacher_pb2.GuidanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[teacher_pb2.GuidanceChunk]:
        received = time.monotonic()
        bind_request_id(context)
        mode = caller_mode(context)
        try:
            params = self.params_from_pb(request)
            first_token_at = 0.0
            events = self._backend.generate(params)
            try:
                async for event in events:
                    now = time.monotonic()
                    if isinstance(event, GuidanceDelta):
                        first_token_at = first_token_at or now
                        yield teacher_pb2.GuidanceChunk(text_delta=event.text)
                        continue
                    ttft = (first_token_at or now) - received
                    done = replace(
                        event,
                        timings=TeacherTimings(
                            queue_seconds=event.timings.queue_seconds,
                            time_to_first_token_seconds=ttft,
                            total_seconds=now - received,
                        ),
                    )
                    self._account(mode, done, ttft, now - received)
                    yield guidance_done_to_pb(done)
            finally:
                await events.aclose()  # aborts the engine request if the edge went away mid-stream
        except asyncio.CancelledError:
            self._metrics.count_error("StreamGuidance", grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as error:
            code, message = status_for(error)
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("StreamGuidance failed")
            elif not isinstance(error, InvalidArgumentError):
                logger.warning("StreamGuidance: %s: %s", code.name, message)
            self._metrics.count_error("StreamGuidance", code.name)
            await context.abort(code, message)

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServerInfo:
        return server_info_to_pb(self._backend.info())

    def _account(self, mode: str, done: GuidanceDone, ttft: float, total: float) -> None:
        m, tier = self._metrics, self._metrics.tier
        m.observe_latency(mode, ttft=ttft, total=total, output_tokens=done.completion_tokens)
        m.prompt_tokens.labels(tier, mode).inc(done.prompt_tokens)
        m.generation_tokens.labels(tier, mode).inc(done.completion_tokens)
        m.prefix_cache_queries.labels(tier).inc(done.prompt_tokens)
        m.prefix_cache_hits.labels(tier).inc(done.cached_prompt_tokens)
        m.cost.labels(tier, "teacher", mode).inc(
            self._prices.cost(done.prompt_tokens, done.completion_tokens, done.cached_prompt_tokens)
        )
        m.request_success.labels(tier, mode, done.finish_reason).inc()
        logger.info(
            "guidance for %s: %d prompt (%d cached) + %d generated tokens in %.2fs (%s)",
            mode,
            done.prompt_tokens,
            done.cached_prompt_tokens,
            done.completion_tokens,
            total,
            done.finish_reason,
        )
