"""`gkt-teacher`: starts the teacher gRPC server with the configured backend and serves until SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import REGISTRY

from cloud_teacher.backends import create_backend
from cloud_teacher.servicer import TeacherServicer
from cloud_teacher.settings import TeacherSettings
from shared.gkt.v1 import teacher_pb2_grpc
from shared.grpc_server import GrpcServer, ServiceBinding, run_tier
from shared.logging_setup import configure_logging
from shared.malformed_requests import MalformedRequestInterceptor
from shared.metrics import GktMetrics
from shared.security import server_credentials, server_interceptors

logger = logging.getLogger(__name__)

SERVICE_NAME = "gkt.v1.TeacherService"


class TeacherServer:
    """The teacher tier in one object: backend + servicer + gRPC server (tests run it in-process)."""

    def __init__(self, settings: TeacherSettings) -> None:
        self.settings = settings
        self.metrics = GktMetrics("teacher")
        self.backend = create_backend(settings, self.metrics)
        self.metrics.track_occupancy(lambda: self.backend.load()[0], lambda: self.backend.load()[1])
        registries = [self.metrics.registry]
        if settings.backend == "vllm":
            registries.append(REGISTRY)  # vLLM's own vllm:* metrics live in the default registry
        self.grpc = GrpcServer(
            settings,
            [
                ServiceBinding(
                    SERVICE_NAME,
                    teacher_pb2_grpc.add_TeacherServiceServicer_to_server,
                    TeacherServicer(self.backend, settings, self.metrics),
                )
            ],
            metrics_registries=registries,
            interceptors=[*server_interceptors(settings, self.metrics), MalformedRequestInterceptor(self.metrics)],
            credentials=server_credentials(settings),
        )

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        """Listens at once (health NOT_SERVING), loads and warms the model, then reports SERVING."""
        await self.listen()
        await self.load()

    async def listen(self) -> None:
        """Accepts connections; health is NOT_SERVING and calls get UNAVAILABLE until `load` finishes."""
        await self.grpc.start()

    async def load(self) -> None:
        """Loads and warms the model, then reports SERVING."""
        await self.backend.start()
        await self.grpc.set_serving()

    async def stop(self, grace: float | None = None) -> None:
        await self.grpc.stop(grace)
        await self.backend.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = TeacherSettings.from_cli(argv, prog="gkt-teacher")
    configure_logging(settings.log_level, json_lines=settings.log_json)
    run_tier(lambda: TeacherServer(settings))


if __name__ == "__main__":
    main()
