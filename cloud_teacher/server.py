"""`gkt-teacher`: starts the teacher gRPC server with the configured backend and serves until SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import REGISTRY

from cloud_teacher.backends import create_backend
from cloud_teacher.servicer import TeacherServicer
from cloud_teacher.settings import TeacherSettings
from shared.metrics import GktMetrics
from shared.protocol.gkt.v1 import teacher_pb2_grpc
from shared.server.grpc_server import ServiceBinding, TierServer, run_tier

logger = logging.getLogger(__name__)

SERVICE_NAME = "gkt.v1.TeacherService"


class TeacherServer(TierServer):
    """The teacher tier in one object: backend + servicer + gRPC server (tests run it in-process)."""

    def __init__(self, settings: TeacherSettings) -> None:
        self.settings: TeacherSettings = settings
        metrics = GktMetrics("teacher")
        self.backend = create_backend(settings, metrics)
        self.backend.on_failure = self.model_failed
        metrics.track_occupancy(lambda: self.backend.occupancy()[0], lambda: self.backend.occupancy()[1])
        servicer = TeacherServicer(self.backend, settings, metrics)
        super().__init__(
            settings,
            metrics,
            ServiceBinding(SERVICE_NAME, teacher_pb2_grpc.add_TeacherServiceServicer_to_server, servicer),
            # vLLM's own vllm:* metrics live in the default registry: served on the same /metrics endpoint.
            extra_registries=[REGISTRY] if settings.backend == "vllm" else [],
        )

    async def load_model(self) -> None:
        await self.backend.start()

    async def close_model(self) -> None:
        await self.backend.close()


def main(argv: Sequence[str] | None = None) -> None:
    run_tier(TeacherSettings, TeacherServer, argv)


if __name__ == "__main__":
    main()
