"""`gkt-edge`: loads the student, connects to the teacher and serves apps (gRPC, and the OpenAI-compatible HTTP API
when `--http-port` is set) until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from edge_student.answer_flow import AnswerFlow
from edge_student.circuit_breaker import CircuitBreaker
from edge_student.openai_http.routes import OpenAIApi
from edge_student.service import EdgeService
from edge_student.servicer import EdgeServicer
from edge_student.settings import EdgeSettings
from edge_student.teacher_client import GuidanceDeadlines, TeacherClient
from shared.llama.engine import BatchedLlamaEngine
from shared.llama.engine_settings import start_engine
from shared.metrics import GktMetrics
from shared.prompt_formats import select_prompt_format
from shared.protocol.gkt.v1 import edge_pb2_grpc
from shared.server.grpc_server import ServiceBinding, TierServer, run_tier
from shared.server.http_server import HttpServer
from shared.server.secrets import read_bearer_token
from shared.server.security import channel_credentials

logger = logging.getLogger(__name__)

SERVICE_NAME = "gkt.v1.EdgeService"


def teacher_credentials(settings: EdgeSettings) -> grpc.ChannelCredentials | None:
    """TLS (and mutual TLS) towards the teacher, when configured."""
    if not (settings.teacher_tls or settings.teacher_tls_ca_file or settings.teacher_tls_cert_file):
        return None
    return channel_credentials(
        settings.teacher_tls_ca_file, settings.teacher_tls_cert_file, settings.teacher_tls_key_file
    )


class EdgeServer(TierServer):
    """The edge tier in one object: student engine + teacher client + the edge service and its doors: the gRPC
    server (+ the HTTP API on the same loop, over the same service)."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings: EdgeSettings = settings
        metrics = GktMetrics("edge")
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
            token=read_bearer_token(
                settings.teacher_auth_token,
                settings.teacher_auth_token_file,
                value_setting=settings.setting_label("teacher_auth_token"),
                file_setting=settings.setting_label("teacher_auth_token_file"),
            ),
            max_message_bytes=settings.max_message_bytes,
        )
        self.breaker = CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_reset_seconds)
        metrics.teacher_circuit_open.labels("edge").set_function(lambda: self.breaker.state != "closed")
        # Both doors adapt one service; it answers "not ready" until `load_model` starts it.
        self.service = EdgeService(settings, metrics, serving=lambda: self.grpc.serving)
        super().__init__(
            settings,
            metrics,
            ServiceBinding(SERVICE_NAME, edge_pb2_grpc.add_EdgeServiceServicer_to_server, EdgeServicer(self.service)),
        )
        self.http: HttpServer | None = None
        if settings.http_port is not None:
            api = OpenAIApi(self.service, metrics)
            self.http = HttpServer(api.app, settings.http_host or settings.host, settings.http_port, settings)

    @property
    def http_port(self) -> int | None:
        """The HTTP API's port once listening (None when it is off)."""
        return self.http.port if self.http is not None else None

    async def listen(self) -> None:
        """gRPC, then HTTP: both answer "not ready" (UNAVAILABLE / 503) until the student is loaded."""
        await super().listen()
        if self.http is not None:
            await self.http.start()

    async def stop_listening(self, grace: float) -> None:
        """Both doors at once: new requests refused, accepted ones get `grace` seconds (then the model goes)."""
        if self.http is None:
            await super().stop_listening(grace)
            return
        await asyncio.gather(super().stop_listening(grace), self.http.stop(grace))

    def ready_info(self) -> dict[str, object]:
        return {"http_port": self.http.port} if self.http is not None else {}

    async def load_model(self) -> None:
        """Loads and warms the student; only then do requests reach the answer flow."""
        s = self.settings
        engine = self.engine = await start_engine(s, s.model, self.metrics.observe_batch, on_failure=self.model_failed)
        self.metrics.track_engine(engine)
        student_format = select_prompt_format(
            s.prompt_format,
            engine.model.metadata("tokenizer.chat_template"),
            s.chat_template_file,
            max_prompt_chars=s.max_prompt_chars,
        )
        self.service.start(AnswerFlow(engine, self.teacher, student_format, self.breaker))
        logger.info("student %s loaded; teacher at %s", s.model, s.teacher_address)

    async def close_model(self) -> None:
        await self.teacher.close()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
            self.engine = None


def main(argv: Sequence[str] | None = None) -> None:
    run_tier(EdgeSettings, EdgeServer, argv)


if __name__ == "__main__":
    main()
