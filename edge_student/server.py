"""`gkt-edge`: loads the student, connects to the teacher and serves apps until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from edge_student.circuit_breaker import CircuitBreaker
from edge_student.scheduler import EdgeScheduler
from edge_student.servicer import EdgeServicer
from edge_student.settings import EdgeSettings
from edge_student.teacher_client import GuidanceDeadlines, TeacherClient
from shared.catalog import resolve_gguf
from shared.gkt.v1 import edge_pb2_grpc
from shared.grpc_server import GrpcServer, ServiceBinding, run_tier
from shared.llama_engine import BatchedLlamaEngine, EngineConfig, SamplingParams
from shared.logging_setup import configure_logging
from shared.malformed_requests import MalformedRequestInterceptor
from shared.metrics import GktMetrics
from shared.prompts import CompletionFormat, format_for_template
from shared.security import channel_credentials, server_credentials, server_interceptors

logger = logging.getLogger(__name__)

SERVICE_NAME = "gkt.v1.EdgeService"


def teacher_credentials(settings: EdgeSettings) -> grpc.ChannelCredentials | None:
    """TLS (and mutual TLS) towards the teacher, when configured."""
    if not (settings.teacher_tls or settings.teacher_tls_ca_file or settings.teacher_tls_cert_file):
        return None
    return channel_credentials(
        settings.teacher_tls_ca_file, settings.teacher_tls_cert_file, settings.teacher_tls_key_file
    )


def teacher_token(settings: EdgeSettings) -> str | None:
    if settings.teacher_auth_token is not None:
        return settings.teacher_auth_token.get_secret_value()
    if settings.teacher_auth_token_file is not None:
        return settings.teacher_auth_token_file.read_text().strip()
    return None


class EdgeServer:
    """The edge tier in one object: student engine + teacher client + scheduler + gRPC server."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = GktMetrics("edge")
        self.engine: BatchedLlamaEngine | None = None
        self.teacher = TeacherClient(
            settings.teacher_address,
            GuidanceDeadlines(
                settings.guidance_first_token_timeout_seconds,
                settings.guidance_timeout_seconds,
                settings.teacher_only_timeout_seconds,
            ),
            credentials=teacher_credentials(settings),
            server_name=settings.teacher_tls_server_name,
            token=teacher_token(settings),
            max_message_bytes=settings.max_message_bytes,
        )
        self.breaker = CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_reset_seconds)
        self.metrics.teacher_circuit_open.labels("edge").set_function(lambda: self.breaker.state != "closed")
        self.servicer = EdgeServicer(None, settings, self.metrics)  # the scheduler arrives once the model is loaded
        self.grpc = GrpcServer(
            settings,
            [ServiceBinding(SERVICE_NAME, edge_pb2_grpc.add_EdgeServiceServicer_to_server, self.servicer)],
            metrics_registries=[self.metrics.registry],
            interceptors=[*server_interceptors(settings, self.metrics), MalformedRequestInterceptor(self.metrics)],
            credentials=server_credentials(settings),
        )

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        """Listens at once (health NOT_SERVING), loads and warms the student, then reports SERVING."""
        await self.listen()
        await self.load()

    async def listen(self) -> None:
        """Accepts connections; health is NOT_SERVING and calls get UNAVAILABLE until `load` finishes."""
        await self.grpc.start()

    async def load(self) -> None:
        """Loads and warms the student, then reports SERVING."""
        s = self.settings
        config = EngineConfig(
            model_path=await asyncio.to_thread(resolve_gguf, s.model),
            n_slots=s.n_slots,
            n_ctx_per_slot=s.n_ctx_per_slot,
            n_threads=s.n_threads,
            prefill_chunk=s.prefill_chunk,
            max_queue=s.max_queue,
        )
        self.engine = await asyncio.to_thread(BatchedLlamaEngine, config, self.metrics.observe_batch)
        template = self.engine.model.metadata("tokenizer.chat_template")
        student_format = CompletionFormat() if s.prompt_format == "completion" else format_for_template(template)
        self.servicer.scheduler = EdgeScheduler(self.engine, self.teacher, student_format, self.breaker)
        engine = self.engine
        self.metrics.track_occupancy(
            lambda: engine.occupancy()[0], lambda: engine.occupancy()[1], lambda: engine.config.n_slots
        )
        await engine.submit("Hello", SamplingParams(max_tokens=1)).wait()  # warm-up before SERVING
        logger.info("student loaded from %s (%d slots); teacher at %s", config.model_path, s.n_slots, s.teacher_address)
        await self.grpc.set_serving()

    async def stop(self, grace: float | None = None) -> None:
        await self.grpc.stop(grace)
        await self.teacher.close()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
            self.engine = None


def main(argv: Sequence[str] | None = None) -> None:
    settings = EdgeSettings.from_cli(argv, prog="gkt-edge")
    configure_logging(settings.log_level, json_lines=settings.log_json)
    run_tier(lambda: EdgeServer(settings))


if __name__ == "__main__":
    main()
