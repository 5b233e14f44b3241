"""EdgeService over gRPC: decode and validate, ask the edge service for the answer, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from edge_student.request_params import generate_params
from edge_student.service import EdgeService
from shared.protocol.convert import (
    answer_delta_to_pb,
    answer_to_pb,
    mode_from_pb,
    policy_from_pb,
    prompt_input_from_pb,
    server_info_to_pb,
)
from shared.protocol.domain import Answer, AnswerDelta, GenerateParams
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from shared.server.request_context import bind_request_id


class EdgeServicer(edge_pb2_grpc.EdgeServiceServicer):
    """Thin: the request flow lives in `EdgeService` (and its `AnswerFlow`)."""

    def __init__(self, service: EdgeService) -> None:
        self._service = service
        self._settings = service.settings
        self._default_policy = service.settings.default_policy()

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
        async for event in self._service.answer(self.params_from_pb(request), context.time_remaining()):
            if isinstance(event, Answer):
                self._service.finish(event, api="grpc")
                return answer_to_pb(event)
        raise RuntimeError("the answer flow ended without an answer")

    async def GenerateStream(  # noqa: N802 (gRPC method name)
        self, request: edge_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[edge_pb2.GenerateStreamChunk]:
        bind_request_id(context)
        async for event in self._service.answer(self.params_from_pb(request), context.time_remaining()):
            if isinstance(event, AnswerDelta):
                yield answer_delta_to_pb(event)
            else:
                self._service.finish(event, api="grpc")
                yield edge_pb2.GenerateStreamChunk(final=answer_to_pb(event))

    async def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> edge_pb2.EdgeInfo:
        flow = self._service.ready_flow()
        teacher = await flow.teacher.get_info()
        return edge_pb2.EdgeInfo(
            edge=server_info_to_pb(self._service.info(flow)),
            teacher=server_info_to_pb(teacher) if teacher is not None else None,
            teacher_address=self._settings.teacher_address,
        )
