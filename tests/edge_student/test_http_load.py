"""Load on the OpenAI-compatible door: 200+ mixed requests above the slot count, streamed and unary, some
disconnecting, some with hopeless deadlines. Every request is accounted for, no slot leaks, no teacher call is left
running."""

from __future__ import annotations

import asyncio
import json

import httpx

from cloud_teacher.server import TeacherServer
from edge_student.server import EdgeServer
from tests.conftest import wait_until
from tests.edge_student.test_load import TOPICS, slots_free

N_REQUESTS, CONCURRENCY = 200, 12
MODELS = ["gkt@2", "gkt-student", "gkt-teacher", "gkt"]


async def test_http_load_streams_disconnects_and_deadlines(
    edge_server: EdgeServer, teacher_server: TeacherServer
) -> None:
    assert edge_server.settings.n_slots < CONCURRENCY
    outcomes: list[str] = []
    expected: list[str] = []
    semaphore = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{edge_server.http_port}", timeout=120, limits=limits
    ) as http:

        async def one(i: int) -> None:
            kind = "disconnect" if i % 10 == 7 else "deadline" if i % 10 == 3 else "normal"
            streamed = kind == "disconnect" or i % 2 == 0
            body: dict[str, object] = {
                "model": MODELS[i % 4],
                "messages": [{"role": "user", "content": f"Tell me about {TOPICS[i % 8]}."}],
                "max_tokens": 3 + i % 6,
                "stream": streamed,
                "gkt": {"guidance_tokens": 1 + i % 3, "timeout_seconds": 0.02 if kind == "deadline" else 120},
            }
            expected.append(kind)
            async with semaphore:
                if not streamed:
                    reply = await http.post("/v1/chat/completions", json=body)
                    outcomes.append(str(reply.status_code))
                    return
                async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
                    if reply.status_code != 200:
                        await reply.aread()
                        outcomes.append(str(reply.status_code))
                        return
                    events = []
                    async for line in reply.aiter_lines():
                        if kind == "disconnect" and line.startswith("data:"):
                            outcomes.append("disconnected")  # leaving the block closes the connection
                            return
                        events.append(line)
                    data = [e.removeprefix("data:").strip() for e in events if e.startswith("data:")]
                    if data and data[-1] == "[DONE]":
                        outcomes.append("200")
                    elif data and json.loads(data[-1]).get("error", {}).get("type") == "timeout":
                        outcomes.append("504")  # the deadline passed after the stream had started: an error event
                    else:
                        outcomes.append(f"stream ended without [DONE]: {data[-2:]}")

        await asyncio.gather(*(one(i) for i in range(N_REQUESTS)))

    counts = {name: outcomes.count(name) for name in set(outcomes)}
    assert len(outcomes) == N_REQUESTS, "every request must end with an outcome"
    assert set(counts) <= {"200", "429", "504", "disconnected"}, counts
    # Every normal request succeeds (the queue is long enough); only the hopeless deadlines may miss.
    assert counts.get("200", 0) >= expected.count("normal"), counts
    assert counts.get("disconnected", 0) == expected.count("disconnect")
    await wait_until(lambda: slots_free(edge_server), within=30)
    await wait_until(lambda: teacher_server.backend.occupancy() == (0, 0), within=30)
