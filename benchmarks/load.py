"""Closed-loop load for the throughput benchmarks: N requests at a fixed concurrency; tokens/s and latencies."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

Request = Callable[[int], Awaitable[int]]  # request index -> tokens generated


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(request: Request, concurrency: int, n_requests: int) -> dict[str, float]:
    """Runs `n_requests` with at most `concurrency` in flight; aggregate tokens/s and latency p50/p95."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(index: int) -> None:
        nonlocal tokens
        async with semaphore:
            started = time.perf_counter()
            generated = await request(index)  # not `tokens += await ...`: that reads `tokens` before awaiting
            tokens += generated
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n_requests)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "requests": n_requests,
        "tokens": tokens,
        "wall_s": wall,
    }
