"""A small blocking Python client for the edge service (what `gkt ask` and apps in Python use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from shared.protocol.convert import mode_name_to_pb
from shared.protocol.domain import ModeName
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc


class EdgeClient:
    """Blocking client: `EdgeClient("127.0.0.1:50052").ask("Why is the sky blue?")`."""

    def __init__(
        self, address: str, *, credentials: grpc.ChannelCredentials | None = None, token: str | None = None
    ) -> None:
        self._channel = (
            grpc.secure_channel(address, credentials) if credentials is not None else grpc.insecure_channel(address)
        )
        self._stub = edge_pb2_grpc.EdgeServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def ask(
        self, question: str, *, mode: ModeName = "gkt", timeout: float = 300.0, **settings: Any
    ) -> edge_pb2.GenerateResponse:
        """One chat question; `settings` are `build_request` keywords (guidance_tokens, max_tokens, temperature,
        seed, stop, system_prompt, ...)."""
        response: edge_pb2.GenerateResponse = self._stub.Generate(
            build_request(question, mode, **settings), timeout=timeout, metadata=self._metadata
        )
        return response

    def stream(
        self, question: str, *, mode: ModeName = "gkt", timeout: float = 300.0, **settings: Any
    ) -> Iterator[edge_pb2.GenerateStreamChunk]:
        """The same, streamed: guidance deltas, then the student's, then a chunk with `final` set."""
        yield from self._stub.GenerateStream(
            build_request(question, mode, **settings), timeout=timeout, metadata=self._metadata
        )

    def close(self) -> None:
        self._channel.close()


SAMPLING_FIELDS = ("temperature", "top_p", "seed", "stop")


def build_request(question: str, mode: ModeName = "gkt", **settings: Any) -> edge_pb2.GenerateRequest:
    """A one-question chat request; sampling keywords (temperature, top_p, seed, stop) go into `sampling`."""
    sampling = {key: settings.pop(key) for key in SAMPLING_FIELDS if key in settings}
    return edge_pb2.GenerateRequest(
        conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content=question)]),
        mode=mode_name_to_pb(mode),
        sampling=common_pb2.Sampling(**sampling),
        **settings,
    )
