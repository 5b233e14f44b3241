"""TeacherService over gRPC: decode the request, stream the backend's guidance, encode, count."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc

from cloud_teacher.backends.base import TeacherBackend
from cloud_teacher.settings import TeacherSettings
from cloud_teacher.verification_metrics import VerificationMetrics
from shared.metrics import GktMetrics
from shared.protocol.convert import (
    guidance_delta_to_pb,
    guidance_done_to_pb,
    input_and_sampling_from_pb,
    server_info_to_pb,
)
from shared.protocol.domain import GuidanceDelta, GuidanceDone, GuidanceParams, TeacherTimings
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from shared.protocol.validation import validate_token_count
from shared.protocol.verification import AcceptanceRule, VerifyResult, VerifyTimings
from shared.protocol.verification_convert import verify_params_from_pb, verify_result_to_pb
from shared.server.request_context import bind_request_id, caller_mode

logger = logging.getLogger(__name__)


class TeacherServicer(teacher_pb2_grpc.TeacherServiceServicer):
    """Thin: every decision about generation lives in the backend."""

    def __init__(self, backend: TeacherBackend, settings: TeacherSettings, metrics: GktMetrics) -> None:
        self._backend = backend
        self._settings = settings
        self._metrics = metrics
        self._prices = settings.prices()
        self._verification_metrics = VerificationMetrics(metrics)

    def params_from_pb(self, request: teacher_pb2.GuidanceRequest) -> GuidanceParams:
        """Decodes and validates a request (raises `InvalidArgumentError` naming the field)."""
        s = self._settings
        prompt_input, sampling = input_and_sampling_from_pb(request, s)
        validate_token_count("max_tokens", request.max_tokens, minimum=1, maximum=s.max_guidance_tokens)
        return GuidanceParams(input=prompt_input, max_tokens=request.max_tokens, sampling=sampling)

    async def StreamGuidance(  # noqa: N802 (gRPC method name)
        self, request: teacher_pb2.GuidanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[teacher_pb2.GuidanceChunk]:
        received = time.monotonic()
        bind_request_id(context)
        mode = caller_mode(context)
        first_token_at = 0.0
        last: GuidanceDelta | None = None
        finished = False
        events = self._backend.generate(self.params_from_pb(request))
        try:
            async for event in events:
                now = time.monotonic()
                if isinstance(event, GuidanceDelta):
                    first_token_at = first_token_at or now
                    last = event
                    yield guidance_delta_to_pb(event)
                    continue
                ttft = (first_token_at or now) - received
                timings = TeacherTimings(event.timings.queue_seconds, ttft, now - received)
                done = replace(event, timings=timings)
                self._account(mode, done, ttft, now - received)
                finished = True
                yield guidance_done_to_pb(done)
        finally:
            await events.aclose()  # aborts the engine request if the edge went away mid-stream
            if not finished and last is not None:
                # Stopped early (the edge had enough, or went away): what was written is still spent.
                now = time.monotonic()
                partial = GuidanceDone(
                    last.prompt_tokens,
                    last.completion_tokens,
                    "cancelled",
                    cached_prompt_tokens=last.cached_prompt_tokens,
                )
                self._account(mode, partial, (first_token_at or now) - received, now - received)

    async def Verify(  # noqa: N802 (gRPC method name)
        self, request: teacher_pb2.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> teacher_pb2.VerifyResponse:
        received = time.monotonic()
        bind_request_id(context)
        mode = caller_mode(context)
        params = verify_params_from_pb(request, self._settings)
        result = await self._backend.verify(params)
        total = time.monotonic() - received
        result = replace(result, timings=VerifyTimings(result.timings.queue_seconds, total))
        self._account_verification(mode, params.acceptance.rule, result)
        return verify_result_to_pb(result)

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.ServerInfo:
        return server_info_to_pb(self._backend.info())

    def _account(self, mode: str, done: GuidanceDone, ttft: float, total: float) -> None:
        m, tier = self._metrics, self._metrics.tier
        m.observe_latency(mode, api="grpc", ttft=ttft, total=total, output_tokens=done.completion_tokens)
        m.prompt_tokens.labels(tier, mode).inc(done.prompt_tokens)
        m.generation_tokens.labels(tier, mode).inc(done.completion_tokens)
        m.prefix_cache_queries.labels(tier).inc(done.prompt_tokens)
        m.prefix_cache_hits.labels(tier).inc(done.cached_prompt_tokens)
        m.cost.labels(tier, "teacher", mode).inc(
            self._prices.cost(done.prompt_tokens, done.completion_tokens, done.cached_prompt_tokens)
        )
        m.count_success(mode, done.finish_reason, api="grpc")
        logger.info(
            "guidance for %s: %d prompt (%d cached) + %d generated tokens in %.2fs (%s)",
            mode,
            done.prompt_tokens,
            done.cached_prompt_tokens,
            done.completion_tokens,
            total,
            done.finish_reason,
        )

    def _account_verification(self, mode: str, rule: AcceptanceRule, result: VerifyResult) -> None:
        """Verification counters, plus the teacher's usual token spend and cost (scored tokens are prompt tokens,
        corrections are generated tokens)."""
        m, tier, usage = self._metrics, self._metrics.tier, result.usage
        self._verification_metrics.observe(rule, result, result.timings.total_seconds)
        m.prompt_tokens.labels(tier, mode).inc(usage.prompt_tokens)
        m.generation_tokens.labels(tier, mode).inc(usage.generated_tokens)
        m.prefix_cache_queries.labels(tier).inc(usage.prompt_tokens)
        m.prefix_cache_hits.labels(tier).inc(usage.cached_prompt_tokens)
        m.cost.labels(tier, "teacher", mode).inc(
            self._prices.cost(usage.prompt_tokens, usage.generated_tokens, usage.cached_prompt_tokens)
        )
        logger.info(
            "verification for %s (%s): %d/%d draft tokens accepted, %d written, %d prompt (%d cached) tokens in "
            "%d pass(es), %.2fs%s",
            mode,
            rule,
            result.accepted_tokens,
            usage.scored_tokens,
            usage.generated_tokens,
            usage.prompt_tokens,
            usage.cached_prompt_tokens,
            usage.passes,
            result.timings.total_seconds,
            " (answer ended)" if result.ended else "",
        )
