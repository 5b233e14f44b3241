"""Bad requests get INVALID_ARGUMENT naming the field, and the edge keeps serving everyone else."""

from __future__ import annotations

import grpc
import pytest

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc

USER = common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="hi")])


def raw(prompt: str = "x", **sampling: object) -> edge_pb2.GenerateRequest:
    """A raw-prompt request with the given sampling settings."""
    return edge_pb2.GenerateRequest(prompt=prompt, sampling=common_pb2.Sampling(**sampling))  # type: ignore[arg-type]


def conversation(*messages: common_pb2.ChatMessage) -> edge_pb2.GenerateRequest:
    return edge_pb2.GenerateRequest(conversation=common_pb2.Conversation(messages=messages))


BAD_REQUESTS = {
    "empty prompt": (edge_pb2.GenerateRequest(), "prompt"),
    # The input is a `oneof`: a prompt and a conversation cannot both be sent; an empty conversation is no input.
    "empty conversation": (conversation(), "prompt"),
    "max_tokens zero": (edge_pb2.GenerateRequest(prompt="x", max_tokens=0), "max_tokens"),
    "max_tokens negative": (edge_pb2.GenerateRequest(prompt="x", max_tokens=-5), "max_tokens"),
    "max_tokens above limit": (edge_pb2.GenerateRequest(prompt="x", max_tokens=1_000_000), "max_tokens"),
    "K negative": (edge_pb2.GenerateRequest(prompt="x", guidance_tokens=-1), "guidance_tokens"),
    "K above limit": (edge_pb2.GenerateRequest(prompt="x", guidance_tokens=100_000), "guidance_tokens"),
    "temperature negative": (raw(temperature=-0.1), "temperature"),
    "temperature too high": (raw(temperature=7.0), "temperature"),
    "temperature NaN": (raw(temperature=float("nan")), "temperature"),
    "top_p zero": (raw(top_p=0.0), "top_p"),
    "top_p above one": (raw(top_p=1.5), "top_p"),
    "unknown mode": (edge_pb2.GenerateRequest(prompt="x", mode=42), "mode"),  # type: ignore[arg-type]
    "unknown role": (conversation(common_pb2.ChatMessage(role="wizard", content="x")), "messages[0].role"),
    "empty message": (conversation(common_pb2.ChatMessage(role="user")), "messages[0].content"),
    "empty stop": (raw(stop=[""]), "stop[0]"),
    # ~6k student tokens: fits the character limit but not the 2,048-token context of a slot.
    "prompt longer than the context": (edge_pb2.GenerateRequest(prompt="lorem ipsum " * 3000), "prompt"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_request_is_invalid_argument_naming_the_field(
    edge_stub: edge_pb2_grpc.EdgeServiceStub, name: str
) -> None:
    request, field = BAD_REQUESTS[name]
    for method in (edge_stub.Generate, edge_stub.GenerateStream):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call = method(request)
            if method is edge_stub.GenerateStream:
                async for _ in call:
                    pass
            else:
                await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert caught.value.details().startswith(f"{field}:"), caught.value.details()


async def test_server_keeps_serving_after_bad_requests(edge_stub: edge_pb2_grpc.EdgeServiceStub) -> None:
    for request, _ in BAD_REQUESTS.values():
        with pytest.raises(grpc.aio.AioRpcError):
            await edge_stub.Generate(request)
    response = await edge_stub.Generate(
        edge_pb2.GenerateRequest(conversation=USER, mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=4)
    )
    assert response.student_text


async def test_message_larger_than_the_limit_is_refused(edge_stub: edge_pb2_grpc.EdgeServiceStub) -> None:
    huge = edge_pb2.GenerateRequest(prompt="x" * (5 * 1024 * 1024))  # above the 4 MiB default message limit
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stub.Generate(huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = await edge_stub.Generate(
        edge_pb2.GenerateRequest(conversation=USER, mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=2)
    )
    assert response.student_text
