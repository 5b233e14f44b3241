"""Structured logs: one JSON object per line, and a request id that travels from the edge to the cloud."""

from __future__ import annotations

import json
import logging

import pytest

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from shared.server.logging_setup import JsonFormatter
from shared.server.request_context import REQUEST_ID_KEY


async def test_request_id_travels_from_edge_to_teacher(
    edge_stub: edge_pb2_grpc.EdgeServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = edge_pb2.GenerateRequest(
        conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="Say hi.")]),
        guidance_tokens=3,
        max_tokens=4,
    )
    call = edge_stub.Generate(request, metadata=((REQUEST_ID_KEY, "req-7f3a"),))
    await call
    trailing = dict(await call.trailing_metadata())
    assert trailing[REQUEST_ID_KEY] == "req-7f3a", "the edge echoes the request id back"
    teacher_records = [r for r in caplog.records if r.name == "cloud_teacher.servicer"]
    edge_records = [r for r in caplog.records if r.name == "edge_student.service"]
    assert any(r.request_id == "req-7f3a" for r in teacher_records), "the teacher's log lacks the edge's request id"
    assert any(r.request_id == "req-7f3a" for r in edge_records)

    caplog.clear()
    call = edge_stub.Generate(request)
    await call
    generated = dict(await call.trailing_metadata())[REQUEST_ID_KEY]
    assert generated and generated != "req-7f3a", "the edge makes an id when the app sends none"
    assert any(r.request_id == generated for r in caplog.records if r.name == "cloud_teacher.servicer")


def test_json_lines_carry_the_request_id() -> None:
    record = logging.getLogger("gkt.test").makeRecord(
        "gkt.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None
    )
    record.request_id = "abc"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["request_id"] == "abc" and entry["level"] == "WARNING"
    assert "\n" not in line
