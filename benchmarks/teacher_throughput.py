"""Teacher benchmark (`make bench-teacher`): guidance tokens/s at 1, 4 and 8 concurrent streams, vLLM vs llama.cpp.

Both backends serve the same catalog teacher (default: the project's default teacher, Qwen2.5-Coder-1.5B; vLLM runs
its Hugging Face conversion, llama.cpp its GGUF) as `gkt-teacher` child processes, one after the other in one run, and
are driven over gRPC with the same prompts and K. Writes `benchmarks/results/teacher_throughput.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from benchmarks.load import Request, measure
from shared.catalog import DEFAULT_TEACHER, cache_dir
from shared.hardware import hardware_summary
from shared.launch import launch_teacher
from shared.protocol.gkt.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc

RESULTS = Path(__file__).parent / "results" / "teacher_throughput.json"
SUBJECTS = ["the ocean", "a city at night", "autumn", "a long journey", "the stars", "a garden", "winter", "music"]


def guidance_request(index: int, k: int) -> teacher_pb2.GuidanceRequest:
    # No stop sequences: every stream runs to K tokens, so tokens/s compares like with like.
    prompt = f"Here is a long essay about {SUBJECTS[index % len(SUBJECTS)]}.\n\n"
    return teacher_pb2.GuidanceRequest(prompt=prompt, max_tokens=k, sampling=common_pb2.Sampling(temperature=0.0))


def stream_request(stub: teacher_pb2_grpc.TeacherServiceStub, k: int) -> Request:
    async def call(index: int) -> int:
        tokens = 0
        async for chunk in stub.StreamGuidance(guidance_request(index, k), timeout=600):
            if chunk.HasField("done"):
                tokens = chunk.done.usage.completion_tokens
        return tokens

    return call


async def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    args_ = ["--log-level", "WARNING", "--n-slots", "8", "--n-threads", str(args.llamacpp_threads)]
    args_ += ["--max-num-seqs", "8", "--model", args.model]
    started = time.monotonic()
    teacher = launch_teacher(backend, args_, log_path=cache_dir() / "run" / f"bench-{backend}.log")
    try:
        await asyncio.to_thread(teacher.wait_ready, 600)
        start_seconds = time.monotonic() - started
        async with grpc.aio.insecure_channel(f"127.0.0.1:{teacher.port}") as channel:
            request = stream_request(teacher_pb2_grpc.TeacherServiceStub(channel), args.guidance_tokens)
            await request(0)  # warm up
            levels = {str(c): await measure(request, c, max(args.requests, c)) for c in args.concurrency}
        return {"start_seconds": start_seconds, "levels": levels}
    finally:
        teacher.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    (cache_dir() / "run").mkdir(parents=True, exist_ok=True)
    backends = {name: await bench_backend(name, args) for name in ("vllm", "llamacpp")}
    vllm, llamacpp = backends["vllm"]["levels"], backends["llamacpp"]["levels"]
    ratios = {str(c): vllm[str(c)]["tokens_per_s"] / llamacpp[str(c)]["tokens_per_s"] for c in args.concurrency}
    scaling = {
        name: {str(c): b["levels"][str(c)]["tokens_per_s"] / b["levels"]["1"]["tokens_per_s"] for c in args.concurrency}
        for name, b in backends.items()
    }
    return {
        "model": f"{args.model} (vLLM: its Hugging Face conversion; llama.cpp: its GGUF)",
        "guidance_tokens": args.guidance_tokens,
        "requests_per_level": args.requests,
        "llamacpp_threads": args.llamacpp_threads,
        "machine": {"cores": os.cpu_count(), "hardware": hardware_summary()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "backends": backends,
        "vllm_over_llamacpp_tokens_per_s": ratios,
        "scaling_vs_one_stream": scaling,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.teacher_throughput", description=__doc__)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=8, help="streams per concurrency level (at least C)")
    parser.add_argument("--guidance-tokens", type=int, default=64, help="K per stream")
    parser.add_argument("--llamacpp-threads", type=int, default=1, help="vLLM's CPU worker also uses one core")
    parser.add_argument("--model", default=DEFAULT_TEACHER, help="catalog name for both backends (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1 (the scaling baseline)")
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    out = sys.stdout
    out.write("| backend | streams | guidance tokens/s | p50 s | p95 s |\n|---|---|---|---|---|\n")
    for name, backend in results["backends"].items():
        for c in args.concurrency:
            row = backend["levels"][str(c)]
            out.write(f"| {name} | {c} | {row['tokens_per_s']:.1f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} |\n")
    out.write(f"\nvLLM / llama.cpp tokens/s: {json.dumps(results['vllm_over_llamacpp_tokens_per_s'])}\n")
    out.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
