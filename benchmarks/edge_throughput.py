"""Edge batching benchmark (`make bench-edge`): the batched edge vs one-at-a-time vs llama-cpp-python's own server.

All three serve the same model (SmolLM2-135M-Instruct Q4_1 by default) configured alike, measured in one run:
(a) `gkt-edge` in STUDENT_ONLY mode with N slots, (b) the same edge with one slot (requests served one at a time),
(c) `python -m llama_cpp.server` (OpenAI-compatible, one request at a time). Like for like: the same chat message
rendered by the GGUF's own chat template, the same threads (prompt and generation), context per request and flash
attention setting as the edge's engine, greedy sampling with no repeat penalty and the same seed. Writes
`benchmarks/results/edge_throughput.json`: per system and client concurrency `tokens_per_s`, `p50_s`, `p95_s`; per
level the batched edge's tokens/s over the server's and over the one-slot edge's; and a check that at concurrency 1
the server is within 10 % of the one-slot edge (if not, the configurations still differ and the ratios mix the two).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from shared.llama.engine import EngineConfig
from shared.protocol.gkt.v1 import edge_pb2_grpc

RESULTS = Path(__file__).parent / "results" / "edge_throughput.json"
SEED = 0  # every request, every system (greedy decoding does not use it; the servers still get the same one)
# At concurrency 1 both serve one request at a time with the same settings: more than this apart means the
# configurations still differ, and the batched edge's ratios over the server would mix configuration with batching.
BASELINE_TOLERANCE = 0.10
# The edge engine's flash-attention setting (its default; gkt-edge has no flag for it): the server gets the same.
ENGINE_FLASH_ATTENTION = EngineConfig(model_path=Path()).flash_attention
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


def question(index: int) -> str:
    return f"Write a long, detailed story about {TOPICS[index % len(TOPICS)]}."


def edge_request(stub: edge_pb2_grpc.EdgeServiceStub, max_tokens: int) -> Request:
    async def call(index: int) -> int:
        return (await edge_call(stub, index, max_tokens))[1]

    return call


async def edge_call(stub: edge_pb2_grpc.EdgeServiceStub, index: int, max_tokens: int) -> tuple[int, int, str]:
    """(prompt tokens, generated tokens, text) of one student-only answer; greedy, no penalties (the engine has
    none), top_p 1 (neutral)."""
    response = await stub.Generate(
        build_request(question(index), "student", max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=SEED),
        timeout=600,
    )
    usage = response.usage
    return int(usage.student_prompt_tokens), int(usage.student_completion_tokens), str(response.text)


def server_request_body(index: int, max_tokens: int) -> dict[str, Any]:
    """The chat request llama_cpp.server gets: the edge's message and sampling, every default that differs made
    neutral (its defaults are temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 and repeat_penalty 1.1)."""
    return {
        "messages": [{"role": "user", "content": question(index)}],
        "max_tokens": max_tokens,
        "temperature": 0.0,  # greedy, as the edge at temperature 0
        "top_p": 1.0,
        "top_k": 0,  # 0 = off
        "min_p": 0.0,
        "repeat_penalty": 1.0,  # 1 = off; the default 1.1 changes which tokens are picked, and costs a pass
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": SEED,
    }


def llama_server_request(client: httpx.AsyncClient, max_tokens: int) -> Request:
    async def call(index: int) -> int:
        return (await llama_server_call(client, index, max_tokens))[1]

    return call


async def llama_server_call(client: httpx.AsyncClient, index: int, max_tokens: int) -> tuple[int, int, str]:
    """(prompt tokens, generated tokens, text) of one chat completion."""
    response = await client.post("/v1/chat/completions", json=server_request_body(index, max_tokens), timeout=600)
    response.raise_for_status()
    body = response.json()
    usage = body["usage"]
    return int(usage["prompt_tokens"]), int(usage["completion_tokens"]), str(body["choices"][0]["message"]["content"])


def llama_server_options(threads: int, n_ctx: int) -> list[str]:
    """The server's tuning options, set like the edge's engine (names as `python -m llama_cpp.server --help` lists
    them; tests/benchmarks checks them against the installed package)."""
    return [
        # The engine uses the same count for prompt and generation; the server's default for prompts is all cores.
        *("--n_threads", str(threads), "--n_threads_batch", str(threads)),
        *("--n_ctx", str(n_ctx)),  # the edge's context per request (--n-ctx-per-slot)
        *("--flash_attn", "true" if ENGINE_FLASH_ATTENTION else "false"),  # the server's default is off
        # The engine computes logits for the last prompt token only; the server by default for every one.
        *("--logits_all", "false"),
        # The GGUF's own chat template, as the edge renders it (the server would otherwise guess a built-in format).
        *("--chat_format", "chat_template.default"),
        *("--seed", str(SEED)),
    ]


def first_answer(prompt_tokens: int, completion_tokens: int, text: str) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "text": text}


async def bench_edge(slots: int, args: argparse.Namespace) -> dict[str, Any]:
    edge = launch_edge(
        f"127.0.0.1:{free_port()}",  # nothing listens there: student-only requests never call a teacher
        [
            *("--model", args.model, "--n-slots", str(slots), "--n-threads", str(args.threads)),
            *("--n-ctx-per-slot", str(args.n_ctx), "--max-queue", "256", "--log-level", "WARNING"),
        ],
    )
    try:
        await asyncio.to_thread(edge.wait_ready, 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            warm_up = first_answer(*await edge_call(stub, 0, args.max_tokens))  # untimed; recorded for the check
            request = edge_request(stub, args.max_tokens)
            levels = {str(c): await measure(request, c, args.requests) for c in args.concurrency}
            return {"first_answer": warm_up, "levels": levels}
    finally:
        edge.stop()


async def bench_llama_server(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    options = llama_server_options(args.threads, args.n_ctx)
    address = ["--host", "127.0.0.1", "--port", str(port)]
    log = open(cache_dir() / "run" / "llama-server.log", "wb")  # noqa: ASYNC230, SIM115 (start-up only; the child writes to it)
    server = subprocess.Popen(  # noqa: ASYNC220 (start-up only, not on the measured path)
        [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf(args.model)), *address, *options],
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
                    raise RuntimeError(f"llama_cpp.server did not start (see {log.name})")
                await asyncio.sleep(0.3)
            warm_up = first_answer(*await llama_server_call(client, 0, args.max_tokens))
            request = llama_server_request(client, args.max_tokens)
            levels = {str(c): await measure(request, c, args.requests) for c in args.concurrency}
            return {"first_answer": warm_up, "levels": levels, "options": options}
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def ratio_table(systems: dict[str, dict[str, Any]], concurrency: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per concurrency level: the batched edge's tokens/s over the server's and over the one-slot edge's."""
    edge, single, server = systems["edge_batched"], systems["edge_one_at_a_time"], systems["llama_cpp_server"]
    return {
        str(c): {
            "batched_edge_over_llama_cpp_server": edge[str(c)]["tokens_per_s"] / server[str(c)]["tokens_per_s"],
            "batched_edge_over_one_slot_edge": edge[str(c)]["tokens_per_s"] / single[str(c)]["tokens_per_s"],
        }
        for c in concurrency
    }


def baseline_check(systems: dict[str, dict[str, Any]], tolerance: float = BASELINE_TOLERANCE) -> dict[str, Any]:
    """Whether, at concurrency 1, the server's tokens/s is within `tolerance` of the one-slot edge's.

    The one-slot edge is the like-for-like peer: both then run one sequence at a time with the same settings (the
    batched edge at concurrency 1 also runs one, but over a KV cache sized for all its slots). `passed` is None when
    concurrency 1 was not measured.
    """
    check: dict[str, Any] = {
        "concurrency": 1,
        "compared": ["llama_cpp_server", "edge_one_at_a_time"],
        "tolerance": tolerance,
        "server_over_one_slot_edge": None,
        "batched_edge_over_server": None,
        "passed": None,
    }
    if "1" not in systems["llama_cpp_server"]:
        return check
    server = systems["llama_cpp_server"]["1"]["tokens_per_s"]
    ratio = server / systems["edge_one_at_a_time"]["1"]["tokens_per_s"]
    check["server_over_one_slot_edge"] = ratio
    check["batched_edge_over_server"] = systems["edge_batched"]["1"]["tokens_per_s"] / server
    check["passed"] = abs(ratio - 1.0) <= tolerance + 1e-9  # inclusive: 110/100 - 1 is 0.10000000000000009
    return check


def prompt_check(first_answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The same prompt for everyone (same token count for the first request), and whether the greedy answers agree
    (they may differ a little: kernels and batch shapes change the last bits of the logits)."""
    prompts = {name: answer["prompt_tokens"] for name, answer in first_answers.items()}
    texts = {answer["text"] for answer in first_answers.values()}
    return {
        "prompt_tokens": prompts,
        "same_prompt_tokens": len(set(prompts.values())) == 1,
        "same_text": len(texts) == 1,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    (cache_dir() / "run").mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    # Interleaving would be fairer to a noisy machine, but each system needs the whole machine: run them one
    # after the other, the same requests each, and compare ratios from this one run.
    runs["edge_batched"] = await bench_edge(args.slots, args)
    runs["edge_one_at_a_time"] = await bench_edge(1, args)
    runs["llama_cpp_server"] = await bench_llama_server(args)
    systems = {name: result["levels"] for name, result in runs.items()}
    return {
        "model": args.model,
        "threads": args.threads,
        "n_ctx_per_request": args.n_ctx,
        "edge_slots": args.slots,
        "max_tokens": args.max_tokens,
        "requests_per_level": args.requests,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "repeat_penalty": 1.0, "seed": SEED},
        "flash_attention": ENGINE_FLASH_ATTENTION,
        "llama_cpp_server_options": runs["llama_cpp_server"]["options"],
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "systems": systems,
        "ratios_tokens_per_s": ratio_table(systems, args.concurrency),
        "baseline_check": baseline_check(systems),
        "prompt_check": prompt_check({name: result["first_answer"] for name, result in runs.items()}),
    }


def print_table(results: dict[str, Any], concurrency: Sequence[int]) -> None:
    out = sys.stdout
    out.write("| system | concurrency | tokens/s | p50 s | p95 s |\n|---|---|---|---|---|\n")
    for name, levels in results["systems"].items():
        for c in concurrency:
            row = levels[str(c)]
            out.write(f"| {name} | {c} | {row['tokens_per_s']:.1f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} |\n")
    out.write("\nbatched edge tokens/s ratios: " + json.dumps(results["ratios_tokens_per_s"], indent=1) + "\n")


def warnings(results: dict[str, Any]) -> list[str]:
    """What makes this run's comparison with the server doubtful (a benchmark reports; it does not fail)."""
    found = []
    check = results["baseline_check"]
    if check["passed"] is None:
        found.append("concurrency 1 was not measured: the baseline check did not run")
    elif not check["passed"]:
        found.append(
            f"at concurrency 1 llama_cpp.server runs at {check['server_over_one_slot_edge']:.2f}x the one-slot edge "
            f"(more than {check['tolerance']:.0%} apart): configuration still differs, so the batched edge's ratios "
            "over the server mix configuration with batching (or the machine was busy: rerun on a quiet one)"
        )
    if not results["prompt_check"]["same_prompt_tokens"]:
        found.append(f"the systems saw prompts of different lengths: {results['prompt_check']['prompt_tokens']}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.edge_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default=[1, 2, 4, 8, 16],
        help="client concurrency levels, comma-separated (default 1,2,4,8,16; 1 is needed for the baseline check)",
    )
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level (default 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every system (default 2)")
    parser.add_argument(
        "--n-ctx", type=int, default=2048, help="context tokens per request, every system (default 2048)"
    )
    parser.add_argument("--slots", type=int, default=8, help="slots of the batched edge (default 8)")
    parser.add_argument("--model", default="smollm2-135m", help="student model for every system (catalog name or GGUF)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (default %(default)s)")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args.concurrency)
    check = results["baseline_check"]
    if check["passed"] is not None:
        sys.stdout.write(
            f"\nbaseline check (concurrency 1, server / one-slot edge tokens/s): "
            f"{check['server_over_one_slot_edge']:.3f} -> {'passed' if check['passed'] else 'FAILED'}\n"
        )
    for warning in warnings(results):
        sys.stderr.write(f"WARNING: {warning}\n")
    sys.stdout.write(f"\nwrote {args.out}\n")
    return 0


def concurrency_levels(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4]; every level a positive integer."""
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be 1 or more: {text!r}")
    return levels


if __name__ == "__main__":
    sys.exit(main())
