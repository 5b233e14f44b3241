"""EdgeService over gRPC: decode and validate, run the answer flow, encode, count."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edge_student.accounting import account_answer
from edge_student.answer_flow import AnswerFlow
from edge_student.request_params import generate_params
from edge_student.settings import EdgeSettings
from shared.hardware import hardware_summary, package_version
from shared.metrics import Api, GktMetrics
from shared.protocol.convert import (
    answer_delta_to_pb,
    answer_to_pb,
    mode_from_pb,
    policy_from_pb,
    prompt_input_from_pb,
    server_info_to_pb,
)
from shared.protocol.domain import Answer, AnswerDelta, GenerateParams, ServerInfo
from shared.protocol.errors import NotReadyError
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from shared.server.request_context import bind_request_id

logger = logging.getLogger(__name__)


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    """Thin: the request flow lives in `AnswerFlow`."""

    def __init__(self, answer_flow: AnswerFlow | None, settings: EdgeSettings, metrics: GktMetrics) -> None:
        self.answer_flow = answer_flow  # None until the student is loaded
        self._settings = settings
        self._metrics = metrics
        self._prices = settings.prices()
        self._default_policy = settings.default_policy()

    def params_from_pb(self, request: edge_pb2.GenerateRequest) -> GenerateParams:
        """Decodes a request; `generate_params` fills in the defaults and validates it (`InvalidArgumentError`)."""
        sampling = request.sampling
        return generate_params(
            self._settings,
            prompt_input_from_pb(request),
            mode=mode_from_pb(request.mode),
            guidance_tokens=request.guidance_tokens if request.HasField("guidance_tokens") else None,
            max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
            temperature=sampling.temperature if sampling.HasField("temperature") else None,
            top_p=sampling.top_p if sampling.HasField("top_p") else None,
            seed=sampling.seed if sampling.HasField("seed") else None,
            stop=sampling.stop,
            policy=policy_from_pb(request.guidance_policy, self._default_policy),
        )

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.GenerateResponse:
        bind_request_id(context)
        async for event in self.ready_flow().answer(self.params_from_pb(request), context.time_remaining()):
            if isinstance(event, Answer):
                self.finish(event, api="grpc")
                return answer_to_pb(event)
        raise RuntimeError("the answer flow ended without an answer")

    async def GenerateStream(  # noqa: N802 (gRPC method name)
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[edge_pb2.GenerateStreamChunk]:
        bind_request_id(context)
        async for event in self.ready_flow().answer(self.params_from_pb(request), context.time_remaining()):
            if isinstance(event, AnswerDelta):
                yield answer_delta_to_pb(event)
            else:
                self.finish(event, api="grpc")
                yield edge_pb2.GenerateStreamChunk(final=answer_to_pb(event))

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.EdgeInfo:
        flow = self.ready_flow()
        teacher = await flow.teacher.get_info()
        return edge_pb2.EdgeInfo(
            edge=server_info_to_pb(self.info(flow)),
            teacher=server_info_to_pb(teacher) if teacher is not None else None,
            teacher_address=self._settings.teacher_address,
        )

    def info(self, flow: AnswerFlow) -> ServerInfo:
        """What this edge runs."""
        s = self._settings
        return ServerInfo(
            tier="edge",
            model=s.model,
            model_file=str(flow.engine.model.path),
            backend="llamacpp",
            threads=s.n_threads,
            slots=s.n_slots,
            hardware=hardware_summary(),
            version=package_version(),
        )

    def finish(self, answer: Answer, *, api: Api) -> None:
        """Counts and logs a finished answer (both APIs end here, so the metrics see every request)."""
        account_answer(self._metrics, answer, self._prices, api=api)
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

    def ready_flow(self) -> AnswerFlow:
        """The answer flow, once the student is loaded (`NotReadyError` before)."""
        if self.answer_flow is None:
            raise NotReadyError("the student model is still loading; retry when health reports SERVING")
        return self.answer_flow
