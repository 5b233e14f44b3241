"""Standard gRPC health (NOT_SERVING until the model is loaded and warmed) and reflection on both servers."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from cloud_teacher.server import TeacherServer
from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, edge_settings, teacher_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return response.status


def reflected_services(port: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


async def test_edge_health_flips_to_serving_only_after_load() -> None:
    server = EdgeServer(edge_settings(closed_port()))
    await server.listen()
    try:
        assert await health(server.port) == NOT_SERVING
        assert await health(server.port, "gkt.v1.EdgeService") == NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                await edge_pb2_grpc.EdgeServiceStub(channel).Generate(edge_pb2.GenerateRequest(prompt="x"))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            else:
                raise AssertionError("a request succeeded before the model was loaded")
        await server.load()
        assert await health(server.port) == SERVING
        assert await health(server.port, "gkt.v1.EdgeService") == SERVING
    finally:
        await server.stop(grace=0)


async def test_teacher_health_flips_to_serving_only_after_load() -> None:
    server = TeacherServer(teacher_settings())
    await server.listen()
    try:
        assert await health(server.port, "gkt.v1.TeacherService") == NOT_SERVING
        await server.load()
        assert await health(server.port, "gkt.v1.TeacherService") == SERVING
    finally:
        await server.stop(grace=0)


async def test_reflection_lists_the_services(teacher_server: TeacherServer, edge_server: EdgeServer) -> None:
    edge_services = await asyncio.to_thread(reflected_services, edge_server.port)
    teacher_services = await asyncio.to_thread(reflected_services, teacher_server.port)
    assert {"gkt.v1.EdgeService", "grpc.health.v1.Health"} <= set(edge_services)
    assert {"gkt.v1.TeacherService", "grpc.health.v1.Health"} <= set(teacher_services)
