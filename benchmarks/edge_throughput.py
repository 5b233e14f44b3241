"""Edge batching benchmark (`make bench-edge`): the batched edge vs one-at-a-time vs llama-cpp-python's own server.

All three serve SmolLM2-135M-Instruct Q4_1 with the same threads, prompts and token limits, measured in one run:
(a) `gkt-edge` in STUDENT_ONLY mode with N slots, (b) the same edge with one slot (requests served one at a time),
(c) `python -m llama_cpp.server` (OpenAI-compatible, one request at a time). Writes
`benchmarks/results/edge_throughput.json` with, per system and client concurrency, `tokens_per_s`, `p50_s`, `p95_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx

from benchmarks.load import Request, free_port, measure
from edge_student.client import build_request
from shared.catalog import cache_dir, resolve_gguf
from shared.launch import launch_edge
from shared.protocol.gkt.v1 import edge_pb2_grpc

RESULTS = Path(__file__).parent / "results" / "edge_throughput.json"
TOPICS = [
    "lighthouses",
    "glaciers",
    "bakeries",
    "comets",
    "libraries",
    "deserts",
    "trains",
    "coral reefs",
    "volcanoes",
    "markets",
    "bridges",
    "forests",
    "harbours",
    "mountains",
    "rivers",
    "castles",
]
CHATML = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def question(index: int) -> str:
    return f"Write a long, detailed story about {TOPICS[index % len(TOPICS)]}."


def edge_request(stub: edge_pb2_grpc.EdgeServiceStub, max_tokens: int) -> Request:
    async def call(index: int) -> int:
        response = await stub.Generate(
            build_request(question(index), "student", max_tokens=max_tokens, temperature=0.0),
            timeout=600,
        )
        return int(response.usage.student_completion_tokens)

    return call


def llama_server_request(client: httpx.AsyncClient, max_tokens: int) -> Request:
    async def call(index: int) -> int:
        response = await client.post(
            "/v1/completions",
            json={"prompt": CHATML.format(question=question(index)), "max_tokens": max_tokens, "temperature": 0.0},
            timeout=600,
        )
        response.raise_for_status()
        return int(response.json()["usage"]["completion_tokens"])

    return call


async def bench_edge(slots: int, args: argparse.Namespace) -> dict[str, Any]:
    edge = launch_edge(
        f"127.0.0.1:{free_port()}",  # nothing listens there: student-only requests never call a teacher
        [
            *("--model", args.model, "--n-slots", str(slots), "--n-threads", str(args.threads)),
            *("--max-queue", "256", "--log-level", "WARNING"),
        ],
    )
    try:
        await asyncio.to_thread(edge.wait_ready, 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            request = edge_request(edge_pb2_grpc.EdgeServiceStub(channel), args.max_tokens)
            await request(0)
            return {str(c): await measure(request, c, args.requests) for c in args.concurrency}
    finally:
        edge.stop()


async def bench_llama_server(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    log = open(cache_dir() / "run" / "llama-server.log", "wb")  # noqa: ASYNC230, SIM115 (start-up only)  # noqa: SIM115 (the child writes to it)
    server = subprocess.Popen(  # noqa: ASYNC220 (start-up only, not on the measured path)
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(resolve_gguf(args.model)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(args.threads),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await client.get("/v1/models")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("llama_cpp.server did not start")
                await asyncio.sleep(0.3)
            request = llama_server_request(client, args.max_tokens)
            await request(0)
            return {str(c): await measure(request, c, args.requests) for c in args.concurrency}
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def ratio_table(results: dict[str, Any], concurrency: Sequence[int]) -> dict[str, dict[str, float]]:
    systems = results["systems"]
    edge, single, server = systems["edge_batched"], systems["edge_one_at_a_time"], systems["llama_cpp_server"]
    return {
        str(c): {
            "vs_one_at_a_time": edge[str(c)]["tokens_per_s"] / single[str(c)]["tokens_per_s"],
            "vs_llama_cpp_server": edge[str(c)]["tokens_per_s"] / server[str(c)]["tokens_per_s"],
        }
        for c in concurrency
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    (cache_dir() / "run").mkdir(parents=True, exist_ok=True)
    systems: dict[str, Any] = {}
    # Interleaving would be fairer to a noisy machine, but each system needs the whole machine: run them one
    # after the other, the same requests each, and compare ratios from this one run.
    systems["edge_batched"] = await bench_edge(args.slots, args)
    systems["edge_one_at_a_time"] = await bench_edge(1, args)
    systems["llama_cpp_server"] = await bench_llama_server(args)
    results: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "edge_slots": args.slots,
        "max_tokens": args.max_tokens,
        "requests_per_level": args.requests,
        "machine": {"cores": __import__("os").cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "systems": systems,
    }
    results["ratios_tokens_per_s"] = ratio_table(results, args.concurrency)
    return results


def print_table(results: dict[str, Any], concurrency: Sequence[int]) -> None:
    out = sys.stdout
    out.write("| system | concurrency | tokens/s | p50 s | p95 s |\n|---|---|---|---|---|\n")
    for name, levels in results["systems"].items():
        for c in concurrency:
            row = levels[str(c)]
            out.write(f"| {name} | {c} | {row['tokens_per_s']:.1f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} |\n")
    out.write("\nbatched edge tokens/s ratios: " + json.dumps(results["ratios_tokens_per_s"], indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_throughput", description=__doc__)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every system")
    parser.add_argument("--slots", type=int, default=8, help="slots of the batched edge")
    parser.add_argument("--model", default="smollm2-135m", help="student model for every system (catalog name or GGUF)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args.concurrency)
    sys.stdout.write(f"\nwrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
