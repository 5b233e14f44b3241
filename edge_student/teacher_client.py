"""The edge's gRPC client for the teacher: streams guidance with deadlines, never hangs, says why it failed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import grpc

from shared.protocol.convert import (
    guidance_delta_from_pb,
    guidance_done_from_pb,
    guidance_request_to_pb,
    server_info_from_pb,
)
from shared.protocol.domain import DegradedReason, GuidanceEvent, GuidanceParams, Mode, ServerInfo
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2_grpc
from shared.protocol.verification import VerifyParams, VerifyResult
from shared.protocol.verification_convert import verify_params_to_pb, verify_result_from_pb
from shared.server.logging_setup import request_id_var
from shared.server.request_context import MODE_KEY, REQUEST_ID_KEY

logger = logging.getLogger(__name__)


class TeacherUnavailableError(Exception):
    """Guidance could not be had (in full); `reason` says why, for metrics and the response.

    `teacher_at_fault`: the teacher itself failed (unreachable, INTERNAL, too slow for the edge's own deadlines with
    the caller's time to spare) rather than the caller (its own short deadline, a prompt the teacher rejects).
    Only the teacher's own failures count towards opening the circuit breaker.
    """

    def __init__(self, reason: DegradedReason, detail: str, *, teacher_at_fault: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.teacher_at_fault = teacher_at_fault


@dataclass(frozen=True)
class GuidanceDeadlines:
    """How long the edge waits for guidance."""

    first_token_seconds: float
    total_seconds: float
    teacher_only_seconds: float  # the whole answer in teacher-only mode is much longer than K tokens


# Retries of UNAVAILABLE happen in the gRPC library, by the service config; round_robin spreads calls over every
# address a DNS name resolves to (several teacher replicas behind a headless Service).
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "gkt.v1.TeacherService"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_options(max_message_bytes: int = 4 * 1024 * 1024) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Notice a dead teacher on an idle connection within ~40 s rather than at the next request's deadline.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a teacher restart.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


class TeacherClient:
    """One channel to the teacher (or to every replica behind its name), shared by all requests."""

    def __init__(
        self,
        address: str,
        deadlines: GuidanceDeadlines,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        token: str | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.address = address
        self.deadlines = deadlines
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        options = channel_options(max_message_bytes)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = teacher_pb2_grpc.TeacherServiceStub(self._channel)

    async def stream_guidance(
        self, params: GuidanceParams, mode: Mode, time_left: float | None = None
    ) -> AsyncGenerator[GuidanceEvent, None]:
        """Yields guidance deltas then one `GuidanceDone`; raises `TeacherUnavailableError` if it cannot finish in time.

        `time_left` is what remains of the app's own deadline: the teacher call never outlives it. Deltas already
        yielded stay valid when it fails: the caller may use the guidance it has.
        """
        metadata = ((REQUEST_ID_KEY, request_id_var.get()), (MODE_KEY, mode), *self._auth)
        total = self.deadlines.teacher_only_seconds if mode == "teacher_only" else self.deadlines.total_seconds
        timeout = total if time_left is None else min(total, time_left)
        callers_deadline = time_left is not None and time_left < total
        call = self._stub.StreamGuidance(
            guidance_request_to_pb(params),
            timeout=max(timeout, 0.001),
            metadata=metadata,
            wait_for_ready=False,
        )
        iterator = call.__aiter__()
        first = True
        try:
            while True:
                try:
                    if first:
                        chunk = await asyncio.wait_for(anext(iterator), self.deadlines.first_token_seconds)
                    else:
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    raise TeacherUnavailableError("error", "the guidance stream ended without a final chunk") from None
                except TimeoutError:  # the edge's own first-token deadline, shorter than the call's
                    raise TeacherUnavailableError("deadline", "no guidance within the first-token deadline") from None
                except grpc.aio.AioRpcError as error:
                    raise _failure_from(error, callers_deadline=callers_deadline) from None
                first = False
                if chunk.HasField("done"):
                    yield guidance_done_from_pb(chunk.done)
                    return
                if chunk.delta.text:
                    yield guidance_delta_from_pb(chunk.delta)
        finally:
            call.cancel()  # no-op after a clean end; aborts the teacher's request when we stop early

    async def verify(self, params: VerifyParams, mode: Mode, time_left: float | None = None) -> VerifyResult:
        """The teacher's verdict on a draft; raises `TeacherUnavailableError` as `stream_guidance` does.

        The call's deadline is the guidance deadline (`total_seconds`), or what remains of the app's own if shorter;
        cancelling the caller cancels the call, which aborts the teacher's engine requests. A teacher that cannot
        verify (UNIMPLEMENTED) is an "error" that is not the teacher's fault: the edge answers unverified.
        """
        metadata = ((REQUEST_ID_KEY, request_id_var.get()), (MODE_KEY, mode), *self._auth)
        total = self.deadlines.total_seconds
        timeout = total if time_left is None else min(total, time_left)
        try:
            response = await self._stub.Verify(
                verify_params_to_pb(params), timeout=max(timeout, 0.001), metadata=metadata, wait_for_ready=False
            )
        except grpc.aio.AioRpcError as error:
            raise _failure_from(error, callers_deadline=time_left is not None and time_left < total) from None
        return verify_result_from_pb(response)

    async def get_info(self, timeout: float = 2.0) -> ServerInfo | None:  # noqa: ASYNC109 (a gRPC deadline)
        """What the teacher reports it runs, or None when it cannot say within `timeout` seconds."""
        try:
            message = await self._stub.GetInfo(common_pb2.GetInfoRequest(), timeout=timeout, metadata=self._auth)
        except grpc.aio.AioRpcError as error:
            logger.info("the teacher's GetInfo failed: %s", error.code().name)
            return None
        return server_info_from_pb(message)

    async def close(self) -> None:
        await self._channel.close()


# The teacher's own unavailability: these open the circuit breaker (overload and refused credentials do not:
# the breaker protects callers from a dead teacher, not from configuration or load shedding).
_TEACHER_FAILURES = (  # UNAVAILABLE and CANCELLED (by the teacher) too: `_failure_from` handles them first
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
)


def _failure_from(error: grpc.aio.AioRpcError, *, callers_deadline: bool) -> TeacherUnavailableError:
    """The failure a status means; `callers_deadline`: the call's timeout was the app's own remaining deadline."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TeacherUnavailableError(
            "deadline", "the guidance did not finish within its deadline", teacher_at_fault=not callers_deadline
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return TeacherUnavailableError("unavailable", error.details() or "the teacher is unreachable")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return TeacherUnavailableError(
            "unauthorized", f"the teacher refused our credentials ({code.name})", teacher_at_fault=False
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TeacherUnavailableError(
            "overloaded", error.details() or "the teacher is overloaded", teacher_at_fault=False
        )
    return TeacherUnavailableError(
        "error", f"{code.name}: {error.details()}", teacher_at_fault=code in _TEACHER_FAILURES
    )
