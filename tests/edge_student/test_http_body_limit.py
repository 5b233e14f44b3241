"""The HTTP door's body limit on the real edge: the gRPC message limit (`max_message_bytes`) applies to HTTP bodies,
an oversized body is refused with 413 in OpenAI's error shape without being read past the limit, and a gRPC stream
on the same edge keeps flowing meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx

from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import edge_pb2, edge_pb2_grpc

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the student keeps counting: a stream that lasts


def chat_body(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes (the user message padded)."""
    empty = json.dumps({"model": "gkt-student", "messages": [{"role": "user", "content": ""}]}).encode()
    body = json.dumps({"model": "gkt-student", "messages": [{"role": "user", "content": "x" * (size - len(empty))}]})
    assert len(body.encode()) == size
    return body.encode()


def assert_413(status: int, body: bytes, limit: int) -> None:
    assert status == 413, body[:300]
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert str(limit) in error["message"]


async def raw_exchange(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[int, bytes]:
    """Sends a request head and some body bytes over a raw socket, never finishing the body, and reads the answer:
    a server that waited for the rest of the body would time out here."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
        await writer.drain()
        response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = response_head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
        payload = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout=10)
    finally:
        writer.close()
    return int(lines[0].split()[1]), payload


async def test_a_body_one_byte_over_the_limit_is_413_while_a_grpc_stream_keeps_flowing(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub
) -> None:
    limit = edge_server.settings.max_message_bytes  # the same setting that caps gRPC messages
    port = edge_server.http_port
    arrivals: list[float] = []
    under_way = asyncio.Event()

    async def stream() -> str:
        request = edge_pb2.GenerateRequest(prompt=COUNTING, mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=96)
        text = []
        async for chunk in edge_stub.GenerateStream(request):
            arrivals.append(time.monotonic())
            if len(arrivals) == 3:
                under_way.set()
            text.append(chunk.delta.text if chunk.HasField("delta") else "")
        return "".join(text)

    flowing = asyncio.create_task(stream())
    await asyncio.wait_for(under_way.wait(), timeout=60)  # the stream is under way before the big bodies arrive
    sent_at = time.monotonic()
    json_headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=json_headers, timeout=30) as client:
        over = await client.post("/v1/chat/completions", content=chat_body(limit + 1))
        assert_413(over.status_code, over.content, limit)
        at_limit = await client.post("/v1/chat/completions", content=chat_body(limit))
        # At the limit the body is read and judged on its content: the prompt is too long, a 400 naming the field.
        assert at_limit.status_code == 400 and "messages" in at_limit.json()["error"]["message"]
    # Content-Length above the limit: refused with not one byte of the body sent.
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n"
    ).encode()
    assert_413(*await raw_exchange(port, head, []), limit)
    # No Content-Length (chunked): refused at the chunk that passes the limit, the body's end never sent.
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"x" * (1 << 20)
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (limit // len(piece) + 1)
    assert_413(*await raw_exchange(port, head, chunks), limit)
    refused_at = time.monotonic()

    text = await asyncio.wait_for(flowing, timeout=120)
    assert text  # the stream finished, not cut
    during = [t for t in arrivals if sent_at <= t <= refused_at]
    assert during, "no gRPC token arrived while the oversized bodies were refused"
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert max(gaps) < 2.0, f"the gRPC stream stalled for {max(gaps):.2f}s"
