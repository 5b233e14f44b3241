"""What both tiers' servers share: health, reflection, /metrics, port 0, ready file and graceful shutdown."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from shared.metrics import GktMetrics
from shared.server.logging_setup import configure_logging
from shared.server.security import server_credentials, server_interceptors
from shared.server.settings_base import SettingsError, TierSettings

S = TypeVar("S", bound=TierSettings)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it to a server."""

    full_name: str  # e.g. "gkt.v1.EdgeService"
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


class CombinedRegistry:
    """Serves several Prometheus registries on one /metrics endpoint (ours plus, e.g., vLLM's default one)."""

    def __init__(self, registries: Iterable[Any]) -> None:
        self._registries = list(registries)

    def collect(self) -> Iterable[Any]:
        for registry in self._registries:
            yield from registry.collect()

    def restricted_registry(self, names: Iterable[str]) -> CombinedRegistry:
        return CombinedRegistry(r.restricted_registry(names) for r in self._registries)


# The longest call a server lets finish on a connection it is recycling (the benchmark's own limit).
MAX_CALL_SECONDS = 3600


def server_options(settings: TierSettings) -> list[tuple[str, Any]]:
    """Channel arguments for a server: message size limits, per-connection stream limit, keepalive."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # Notice dead clients: ping idle connections, and let clients ping us every 10 s without a strike.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
        # Clients re-resolve and spread over new replicas only when connections end: recycle them every 5 minutes.
        # Calls in flight keep the old connection until they end: a long answer behind a queue on a CPU teacher
        # takes many minutes, and cutting it (as a one-minute grace did) fails the request with UNAVAILABLE.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", MAX_CALL_SECONDS * 1000),
    ]


class GrpcServer:
    """A gRPC aio server with standard health (NOT_SERVING until `set_serving`) and reflection."""

    def __init__(
        self,
        settings: TierSettings,
        services: Sequence[ServiceBinding],
        *,
        metrics_registries: Sequence[Any] = (),
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=server_options(settings), interceptors=list(interceptors))
        for binding in services:
            binding.add_to_server(binding.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [b.full_name for b in services] + [health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        address = f"{settings.host}:{settings.port}"
        if credentials is None:
            self.port = int(self.server.add_insecure_port(address))
        else:
            self.port = int(self.server.add_secure_port(address, credentials))
        if self.port == 0:
            raise RuntimeError(f"could not bind the gRPC port at {address}")
        self.metrics_port: int | None = None
        self.serving_since: float | None = None  # time.monotonic() when health turned SERVING
        self.serving = False  # what health reports for the server as a whole (other doors to the tier ask this)
        self._metrics_registries = metrics_registries
        self._metrics_http: Any = None

    async def start(self) -> None:
        """Starts listening (health NOT_SERVING) and the /metrics endpoint, if configured."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.settings.metrics_port is not None and self._metrics_registries:
            self._metrics_http, _ = start_http_server(
                self.settings.metrics_port,
                addr=self.settings.metrics_host,
                registry=CombinedRegistry(self._metrics_registries),
            )
            self.metrics_port = self._metrics_http.server_port
        logger.info("gRPC listening on %s:%s (metrics port %s)", self.settings.host, self.port, self.metrics_port)

    async def set_not_serving(self) -> None:
        """Flips health to NOT_SERVING (the model can serve no more): load balancers stop sending traffic."""
        self.serving = False
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        logger.error("NOT_SERVING on port %s: the model failed", self.port)

    async def set_serving(self, ready_info: Mapping[str, object] | None = None) -> None:
        """Flips health to SERVING (call once the model is loaded and warmed) and writes the ready file (the bound
        ports, plus `ready_info`)."""
        self.serving_since = time.monotonic()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        if self.settings.ready_file is not None:
            info = {"port": self.port, "metrics_port": self.metrics_port, **(ready_info or {})}
            self.settings.ready_file.write_text(json.dumps(info))
        logger.info("SERVING on port %s", self.port)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, give accepted ones `grace` seconds, then close."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()

    async def _set_health(self, status: int) -> None:
        for name in ["", *(b.full_name for b in self.services)]:
            await self.health.set(name, status)


class TierServer(abc.ABC):
    """One tier in one object: its gRPC server (health, reflection, /metrics, the error and auth interceptors, TLS)
    around a model that loads after the port is open. Subclasses say how to load and close the model."""

    def __init__(
        self,
        settings: TierSettings,
        metrics: GktMetrics,
        service: ServiceBinding,
        *,
        extra_registries: Sequence[Any] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once listening
        self.grpc = GrpcServer(
            settings,
            [service],
            metrics_registries=[metrics.registry, *extra_registries],
            interceptors=server_interceptors(settings, metrics),
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
        self._loop = asyncio.get_running_loop()
        await self.grpc.start()

    def model_failed(self, error: BaseException) -> None:
        """Told from any thread that the model died: health turns NOT_SERVING, so traffic goes elsewhere."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(lambda: loop.create_task(self.grpc.set_not_serving()))

    async def load(self) -> None:
        """Loads and warms the model, then reports SERVING."""
        await self.load_model()
        await self.grpc.set_serving(self.ready_info())

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, new calls refused, accepted ones get `grace` seconds; then the model is freed."""
        await self.stop_listening(self.settings.shutdown_grace_seconds if grace is None else grace)
        await self.close_model()

    async def stop_listening(self, grace: float) -> None:
        """Stops taking requests and lets accepted ones finish within `grace` seconds (a tier with more doors than
        gRPC closes them all here, before the model goes)."""
        await self.grpc.stop(grace)

    def ready_info(self) -> dict[str, object]:
        """What the ready file reports besides the gRPC and metrics ports (e.g. another port the tier serves)."""
        return {}

    @abc.abstractmethod
    async def load_model(self) -> None:
        """Loads and warms this tier's model (the port is already open, health NOT_SERVING)."""

    @abc.abstractmethod
    async def close_model(self) -> None:
        """Frees the model and whatever else the tier holds (after the gRPC server stopped)."""


def run_tier(settings_class: type[S], make_server: Callable[[S], TierServer], argv: Sequence[str] | None) -> None:
    """A tier's entry point: settings from the command line and environment, logging, then the server until
    SIGTERM/SIGINT, and a graceful shutdown."""
    settings = settings_class.from_cli(argv)
    configure_logging(settings.log_level, json_lines=settings.log_json)

    async def serve() -> None:
        try:
            server = make_server(settings)
        except SettingsError as error:
            # A clear line for the operator (and the pod's log), not a traceback; non-zero so the pod restarts
            # visibly failing instead of serving with an unsafe setting.
            logger.critical("refusing to start: %s", error)
            raise SystemExit(2) from None
        await server.start()
        try:
            await wait_for_shutdown_signal()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


async def wait_for_shutdown_signal() -> None:
    """Returns on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutdown signal received")
