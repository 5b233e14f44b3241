"""`gkt up` (what `make run` calls): teacher and edge as child processes, a demo question, serve until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.catalog import cache_dir

# A question the strong teacher gets right and the small student alone tends not to: the teacher's first tokens
# set up the reasoning, the student finishes it.
DEMO_QUESTION = (
    "A baker made 24 muffins, sold 15, then baked 8 more. How many muffins does the baker have now? "
    "Explain in two short steps."
)
DEMO_SETTINGS = ("--guidance-tokens", "24", "--max-tokens", "120", "--temperature", "0")


@dataclass
class ServiceProcess:
    """A tier running as a child process, with the ports it reported once SERVING."""

    name: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    port: int = 0
    metrics_port: int | None = None

    def wait_ready(self, timeout: float) -> None:
        """Waits for the ready file (written once health is SERVING) and checks health over gRPC."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode} before it was ready")
            if self.ready_file.is_file() and self.ready_file.stat().st_size:
                info = json.loads(self.ready_file.read_text())
                self.port, self.metrics_port = info["port"], info["metrics_port"]
                if health_status(f"127.0.0.1:{self.port}") == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} was not SERVING within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: accepted requests finish), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def health_status(address: str, service: str = "", timeout: float = 2.0) -> int:
    """The gRPC health status of `service` at `address` (UNKNOWN when unreachable)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.UNKNOWN
    return response.status


def launch(
    name: str, command: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> ServiceProcess:
    """Starts `command --ready-file <tmp>`; stdout/stderr go to `log_path` (or are inherited)."""
    ready = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir() / "run")) / "ready.json"
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child owns it for its lifetime)
    process = subprocess.Popen(
        [*command, "--ready-file", str(ready)],
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )
    return ServiceProcess(name, process, ready)


def launch_teacher(
    backend: str,
    args: Sequence[str] = (),
    *,
    port: int = 0,
    metrics_port: int | None = None,
    log_path: Path | None = None,
) -> ServiceProcess:
    """`gkt-teacher` on 127.0.0.1 as a child process (`args` are extra flags, e.g. `--model`)."""
    command = [_bin("gkt-teacher"), "--backend", backend, "--host", "127.0.0.1", "--port", str(port)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return launch("teacher", [*command, *args], log_path=log_path)


def launch_edge(
    teacher_address: str,
    args: Sequence[str] = (),
    *,
    port: int = 0,
    metrics_port: int | None = None,
    log_path: Path | None = None,
) -> ServiceProcess:
    """`gkt-edge` on 127.0.0.1 as a child process, calling the teacher at `teacher_address`."""
    command = [_bin("gkt-edge"), "--teacher-address", teacher_address, "--host", "127.0.0.1", "--port", str(port)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return launch("edge", [*command, *args], log_path=log_path)


def _bin(name: str) -> str:
    """A console script of this environment (beside the running interpreter)."""
    return str(Path(sys.executable).parent / name)


def up_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gkt up", description=__doc__)
    parser.add_argument("--backend", choices=["vllm", "llamacpp", "openai"], default="vllm")
    parser.add_argument("--teacher-port", type=int, default=50051)
    parser.add_argument("--edge-port", type=int, default=50052)
    parser.add_argument("--teacher-metrics-port", type=int, default=9101)
    parser.add_argument("--edge-metrics-port", type=int, default=9102)
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
        f"127.0.0.1:{args.teacher_port}", edge_args, port=args.edge_port, metrics_port=args.edge_metrics_port
    )
    try:
        teacher.wait_ready(timeout=600)
        edge.wait_ready(timeout=300)
        edge_address = f"127.0.0.1:{edge.port}"
        sys.stdout.write(
            f"\nteacher ({args.backend}) on 127.0.0.1:{teacher.port}, metrics :{teacher.metrics_port}\n"
            f"edge on {edge_address}, metrics :{edge.metrics_port}\n\ndemo: gkt ask {args.question!r}\n\n"
        )
        sys.stdout.flush()
        from edge_student.client import ask_main

        ask_main([args.question, "--edge", edge_address, *DEMO_SETTINGS])
        sys.stdout.write(
            f'\nserving until Ctrl-C. try:  .venv/bin/gkt ask "your question" --edge {edge_address} --json\n'
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
