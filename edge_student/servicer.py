"""EdgeService over gRPC: decode and validate, run the scheduler, encode, count."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from edge_student.accounting import account_answer
from edge_student.scheduler import EdgeScheduler
from edge_student.settings import EdgeSettings
from shared.convert import (
    answer_delta_to_pb,
    answer_to_pb,
    mode_from_pb,
    prompt_input_from_pb,
    sampling_from_pb,
    server_info_to_pb,
)
from shared.domain import Answer, AnswerDelta, GenerateParams, ServerInfo
from shared.errors import InvalidArgumentError, NotReadyError, status_for
from shared.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from shared.hardware import hardware_summary, package_version
from shared.metrics import GktMetrics
from shared.request_context import bind_request_id
from shared.validation import validate_prompt_input, validate_sampling, validate_token_count

logger = logging.getLogger(__name__)


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    """Thin: the request flow lives in `EdgeScheduler`."""

    def __init__(self, scheduler: EdgeScheduler | None, settings: EdgeSettings, metrics: GktMetrics) -> None:
        self.scheduler = scheduler  # None until the student is loaded
        self._settings = settings
        self._metrics = metrics
        self._prices = settings.prices()

    def params_from_pb(self, request: edge_pb2.GenerateRequest) -> GenerateParams:
        """Decodes a request, fills in the defaults and validates it (raises `InvalidArgumentError`)."""
        s = self._settings
        prompt_input = prompt_input_from_pb(request)
        validate_prompt_input(prompt_input, max_prompt_chars=s.max_prompt_chars)
        mode = mode_from_pb(request.mode)
        max_tokens = request.max_tokens if request.HasField("max_tokens") else s.default_max_tokens
        validate_token_count("max_tokens", max_tokens, minimum=1, maximum=s.max_tokens_limit)
        guidance_tokens = request.guidance_tokens if request.HasField("guidance_tokens") else s.default_guidance_tokens
        validate_token_count("guidance_tokens", guidance_tokens, minimum=0, maximum=s.max_guidance_tokens)
        sampling = sampling_from_pb(request, temperature=s.default_temperature, top_p=s.default_top_p)
        validate_sampling(sampling)
        return GenerateParams(
            input=prompt_input, mode=mode, guidance_tokens=guidance_tokens, max_tokens=max_tokens, sampling=sampling
        )

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> edge_pb2.GenerateResponse:
        bind_request_id(context)
        try:
            async for event in self._ready_scheduler().answer(self.params_from_pb(request), context.time_remaining()):
                if isinstance(event, Answer):
                    self._finish(event)
                    return answer_to_pb(event)
            raise RuntimeError("the scheduler ended without an answer")
        except asyncio.CancelledError:
            self._metrics.count_error("Generate", grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as error:
            await self._abort(context, "Generate", error)
            raise  # unreachable: abort raises

    async def GenerateStream(  # noqa: N802 (gRPC method name)
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[edge_pb2.GenerateStreamChunk]:
        bind_request_id(context)
        try:
            async for event in self._ready_scheduler().answer(self.params_from_pb(request), context.time_remaining()):
                if isinstance(event, AnswerDelta):
                    yield answer_delta_to_pb(event)
                else:
                    self._finish(event)
                    yield edge_pb2.GenerateStreamChunk(final=answer_to_pb(event))
        except asyncio.CancelledError:
            self._metrics.count_error("GenerateStream", grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as error:
            await self._abort(context, "GenerateStream", error)

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> edge_pb2.EdgeInfo:
        scheduler = self._ready_scheduler()
        teacher = await scheduler.teacher.get_info()
        return edge_pb2.EdgeInfo(
            edge=server_info_to_pb(self.info(scheduler)),
            teacher=server_info_to_pb(teacher) if teacher is not None else None,
            teacher_address=self._settings.teacher_address,
        )

    def info(self, scheduler: EdgeScheduler) -> ServerInfo:
        """What this edge runs."""
        s = self._settings
        return ServerInfo(
            tier="edge",
            model=s.model,
            model_file=str(scheduler.engine.model.path),
            backend="llamacpp",
            threads=s.n_threads,
            slots=s.n_slots,
            hardware=hardware_summary(),
            version=package_version(),
        )

    def _finish(self, answer: Answer) -> None:
        account_answer(self._metrics, answer, self._prices)
        usage, timings = answer.usage, answer.timings
        logger.info(
            "%s answer: teacher %d+%d tokens, student %d+%d tokens, %.2fs%s",
            answer.mode,
            usage.teacher_prompt_tokens,
            usage.teacher_completion_tokens,
            usage.student_prompt_tokens,
            usage.student_completion_tokens,
            timings.total_seconds,
            f" (degraded: {answer.degraded_reason})" if answer.degraded else "",
        )

    def _ready_scheduler(self) -> EdgeScheduler:
        if self.scheduler is None:
            raise NotReadyError("the student model is still loading; retry when health reports SERVING")
        return self.scheduler

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
        code, message = status_for(error)
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("%s failed", method)
        elif not isinstance(error, InvalidArgumentError):
            logger.warning("%s: %s: %s", method, code.name, message)
        self._metrics.count_error(method, code.name)
        await context.abort(code, message)
