"""Load: 200+ mixed requests above the slot count, some cancelled, some with hopeless deadlines. Every request is
accounted for by status, nothing leaks, and the latency percentiles are reported."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time

import grpc

from edge_student.server import EdgeServer
from shared.catalog import cache_dir
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import wait_until

logger = logging.getLogger(__name__)
TOPICS = ["rivers", "volcanoes", "bread", "bicycles", "the moon", "honey bees", "glass", "chess"]
MODES = [edge_pb2.MODE_GKT, edge_pb2.MODE_STUDENT_ONLY, edge_pb2.MODE_TEACHER_ONLY]
N_REQUESTS, CONCURRENCY = 200, 12


def slots_free(server: EdgeServer) -> bool:
    assert server.engine is not None
    stats = server.engine.stats()
    return stats.free_slots == stats.n_slots and stats.waiting == 0 and stats.kv_cells_used == 0


async def test_load_mixed_modes_cancels_and_deadlines(edge_server: EdgeServer) -> None:
    assert edge_server.settings.n_slots < CONCURRENCY
    tasks_before = len(asyncio.all_tasks())
    latencies: list[float] = []
    outcomes: list[str] = []
    expected: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_server.port}") as channel:
        stub = edge_pb2_grpc.EdgeServiceStub(channel)
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            message = common_pb2.ChatMessage(role="user", content=f"Tell me about {TOPICS[i % 8]}.")
            request = edge_pb2.GenerateRequest(
                conversation=common_pb2.Conversation(messages=[message]),
                mode=MODES[i % 3],
                guidance_tokens=1 + i % 4,
                max_tokens=2 + i % 7,
            )
            kind = "cancel" if i % 10 == 7 else "deadline" if i % 10 == 3 else "normal"
            expected.append(kind)
            async with semaphore:
                started = time.perf_counter()
                try:
                    if kind == "cancel":
                        call = stub.GenerateStream(request)
                        async for _ in call:
                            call.cancel()
                            break
                        outcomes.append("CANCELLED")
                        return
                    await stub.Generate(request, timeout=0.02 if kind == "deadline" else 120)
                    latencies.append(time.perf_counter() - started)
                    outcomes.append("OK")
                except grpc.aio.AioRpcError as error:
                    outcomes.append(error.code().name)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(N_REQUESTS)))
        wall = time.perf_counter() - started

    counts = {name: outcomes.count(name) for name in set(outcomes)}
    assert len(outcomes) == N_REQUESTS, "every request must end with a status"
    assert set(counts) <= {"OK", "CANCELLED", "DEADLINE_EXCEEDED"}, counts
    # Every normal request succeeds; only the hopeless deadlines may miss (a few might still make it).
    assert counts.get("OK", 0) >= expected.count("normal")
    assert counts.get("CANCELLED", 0) == expected.count("cancel")
    await wait_until(lambda: slots_free(edge_server), within=30)
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, within=10)
    latencies.sort()
    figures = {
        "requests": N_REQUESTS,
        "concurrency": CONCURRENCY,
        "slots": edge_server.settings.n_slots,
        "statuses": counts,
        "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
    }
    logger.info("load test: %s", figures)
    results = cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / "load_test.json").write_text(json.dumps(figures, indent=2))
