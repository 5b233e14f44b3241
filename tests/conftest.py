"""Session fixtures: the real default models behind real gRPC servers on 127.0.0.1, port 0, started once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cloud_teacher.server import TeacherServer
from cloud_teacher.settings import TeacherSettings
from edge_student.server import EdgeServer
from edge_student.settings import EdgeSettings
from shared.protocol.gkt.v1 import edge_pb2_grpc, teacher_pb2_grpc
from shared.server.logging_setup import configure_logging

configure_logging("INFO")
Server = TypeVar("Server", TeacherServer, EdgeServer)


def teacher_settings(**overrides: object) -> TeacherSettings:
    """llama.cpp teacher on port 0 with one thread (the other core is the student's)."""
    values: dict[str, object] = {
        "backend": "llamacpp",
        "model": "gemma3-270m",  # the tiny pair, where the model does not matter: fast
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "n_threads": 1,
        "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return TeacherSettings(**values)  # type: ignore[arg-type]


def edge_settings(teacher: int | str, **overrides: object) -> EdgeSettings:
    """Edge on port 0 (and its OpenAI-compatible HTTP API on another); `teacher` is the teacher's port on 127.0.0.1
    or a full gRPC target."""
    address = f"127.0.0.1:{teacher}" if isinstance(teacher, int) else teacher
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "http_port": 0,
        "metrics_port": 0,
        "teacher_address": address,
        "model": "smollm2-135m",
        "n_threads": 1,
        "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return EdgeSettings(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="session")
async def teacher_server() -> AsyncIterator[TeacherServer]:
    async with running(TeacherServer(teacher_settings())) as server:
        yield server


@pytest_asyncio.fixture(scope="session")
async def edge_server(teacher_server: TeacherServer) -> AsyncIterator[EdgeServer]:
    async with running(EdgeServer(edge_settings(teacher_server.port))) as server:
        yield server


@pytest_asyncio.fixture(scope="session")
async def edge_channel(edge_server: EdgeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_server.port}") as channel:
        yield channel


@pytest.fixture
def edge_stub(edge_channel: grpc.aio.Channel) -> edge_pb2_grpc.EdgeServiceStub:
    return edge_pb2_grpc.EdgeServiceStub(edge_channel)


@pytest_asyncio.fixture(scope="session")
async def teacher_channel(teacher_server: TeacherServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{teacher_server.port}") as channel:
        yield channel


@pytest.fixture
def teacher_stub(teacher_channel: grpc.aio.Channel) -> teacher_pb2_grpc.TeacherServiceStub:
    return teacher_pb2_grpc.TeacherServiceStub(teacher_channel)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, interval: float = 0.05) -> None:
    """Polls `predicate()` until it is true; fails the test after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    """Starts a tier's server (model loaded, SERVING) and stops it at the end of the block."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def running_edge(teacher: int | str, **overrides: object) -> contextlib.AbstractAsyncContextManager[EdgeServer]:
    """An extra edge (its own student engine) for tests that need other settings or another teacher."""
    return running(EdgeServer(edge_settings(teacher, **overrides)))


def running_teacher(**overrides: object) -> contextlib.AbstractAsyncContextManager[TeacherServer]:
    """An extra llama.cpp teacher (its own engine)."""
    return running(TeacherServer(teacher_settings(**overrides)))


def counter_total(registry: CollectorRegistry, *families: str) -> float:
    """The sum of the named counters over all their label sets, read straight from a registry."""
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name in families
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
