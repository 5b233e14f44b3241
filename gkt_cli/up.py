"""`gkt up` (what `make run` calls): teacher and edge as child processes, a demo question, serve until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from gkt_cli.ask import ask_main
from shared.catalog import cache_dir
from shared.launch import launch_edge, launch_teacher

# A question the strong teacher gets right and the small student alone tends not to: the teacher's first tokens
# set up the reasoning, the student finishes it.
DEMO_QUESTION = (
    "A baker made 24 muffins, sold 15, then baked 8 more. How many muffins does the baker have now? "
    "Explain in two short steps."
)
DEMO_SETTINGS = ("--guidance-tokens", "24", "--max-tokens", "120", "--temperature", "0")


def up_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gkt up", description=__doc__)
    parser.add_argument("--backend", choices=["vllm", "llamacpp", "openai"], default="vllm")
    parser.add_argument("--teacher-port", type=int, default=50051)
    parser.add_argument("--edge-port", type=int, default=50052)
    parser.add_argument("--teacher-metrics-port", type=int, default=9101)
    parser.add_argument("--edge-metrics-port", type=int, default=9102)
    parser.add_argument(
        "--edge-http-port", type=int, default=8080, help="the edge's OpenAI-compatible API (0: any free port)"
    )
    parser.add_argument("--teacher-model", help="teacher --model (default: the teacher's, qwen2.5-coder-1.5b)")
    parser.add_argument("--student-model", help="edge --model (default: the edge's)")
    parser.add_argument("--question", default=DEMO_QUESTION)
    parser.add_argument("--no-wait", action="store_true", help="stop after the demo question")
    args = parser.parse_args(argv)
    (cache_dir() / "run").mkdir(parents=True, exist_ok=True)
    teacher_args = ["--model", args.teacher_model] if args.teacher_model else []
    teacher = launch_teacher(args.backend, teacher_args, port=args.teacher_port, metrics_port=args.teacher_metrics_port)
    edge_args = ["--model", args.student_model] if args.student_model else []
    edge = launch_edge(
        f"127.0.0.1:{args.teacher_port}",
        edge_args,
        port=args.edge_port,
        metrics_port=args.edge_metrics_port,
        http_port=args.edge_http_port,
    )
    try:
        teacher.wait_ready(timeout=600)
        edge.wait_ready(timeout=300)
        edge_address = f"127.0.0.1:{edge.port}"
        base_url = f"http://127.0.0.1:{edge.http_port}/v1"
        sys.stdout.write(
            f"\nteacher ({args.backend}) on 127.0.0.1:{teacher.port}, metrics :{teacher.metrics_port}\n"
            f"edge on {edge_address} (gRPC), metrics :{edge.metrics_port}\n"
            f"edge OpenAI-compatible API: {base_url}  (models gkt, gkt-student, gkt-teacher, gkt@K)\n"
            f"\ndemo: gkt ask {args.question!r}\n\n"
        )
        sys.stdout.flush()
        ask_main([args.question, "--edge", edge_address, *DEMO_SETTINGS])
        sys.stdout.write(
            f'\nserving until Ctrl-C. try:  .venv/bin/gkt ask "your question" --edge {edge_address} --json\n'
            f"  or any OpenAI client:  curl {base_url}/chat/completions -H 'content-type: application/json' "
            """-d '{"model": "gkt", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}'\n"""
        )
        sys.stdout.flush()
        if not args.no_wait:
            # Block the signals first so that sigwait, not the default handlers, receives them.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.write("stopping edge and teacher...\n")
        edge.stop()
        teacher.stop()
    return 0
