"""Several teacher replicas behind one DNS name: the edge spreads guidance over all of them (gRPC round-robin) and
keeps answering when one goes away. A small DNS server in the test answers for the name, as a headless
Kubernetes Service's DNS would."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rdatatype
import dns.rrset
import grpc
import pytest
from prometheus_client import CollectorRegistry

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port, counter_total, running_edge, running_teacher

NAME = "teachers.gkt.test."
REPLICAS = ["127.0.0.2", "127.0.0.3"]


@pytest.fixture
def dns_server() -> Iterator[int]:
    """Answers A queries for NAME with every replica address (and nothing else)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            if question.name.to_text().lower() == NAME and question.rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(NAME, 5, "IN", "A", *REPLICAS))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def guidance_calls(registry: CollectorRegistry) -> float:
    return counter_total(registry, "gkt_request_success")


async def test_round_robin_over_replicas_and_failover(dns_server: int) -> None:
    port = closed_port()
    async with (
        running_teacher(host=REPLICAS[0], port=port) as first,
        running_teacher(host=REPLICAS[1], port=port) as second,
    ):
        target = f"dns://127.0.0.1:{dns_server}/{NAME.rstrip('.')}:{port}"
        async with running_edge(target) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                stub = edge_pb2_grpc.EdgeServiceStub(channel)

                async def ask(i: int) -> edge_pb2.GenerateResponse:
                    return await stub.Generate(
                        edge_pb2.GenerateRequest(
                            conversation=common_pb2.Conversation(
                                messages=[common_pb2.ChatMessage(role="user", content=f"What is {i} plus {i}?")]
                            ),
                            guidance_tokens=2,
                            max_tokens=2,
                        )
                    )

                for i in range(8):
                    assert not (await ask(i)).degraded
                per_replica = [guidance_calls(t.metrics.registry) for t in (first, second)]
                assert per_replica[0] >= 2 and per_replica[1] >= 2, f"not spread over both replicas: {per_replica}"

                await first.stop(grace=0)
                answers = [await ask(i) for i in range(6)]
                assert all(a.text for a in answers)
                assert sum(not a.degraded for a in answers) >= 5, [a.degraded_reason for a in answers]
                assert guidance_calls(second.metrics.registry) >= per_replica[1] + 5
