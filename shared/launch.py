"""Starts the tiers as child processes (`gkt-teacher`, `gkt-edge`) and waits until they are SERVING: one place for
`gkt up`, `gkt bench` and the throughput benchmarks."""

from __future__ import annotations

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


@dataclass
class ServiceProcess:
    """A tier running as a child process, with the ports it reported once SERVING."""

    name: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    port: int = 0
    metrics_port: int | None = None
    http_port: int | None = None  # the edge's OpenAI-compatible API, when it serves one

    def wait_ready(self, timeout: float) -> None:
        """Waits for the ready file (written once health is SERVING) and checks health over gRPC."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode} before it was ready")
            if self.ready_file.is_file() and self.ready_file.stat().st_size:
                info = json.loads(self.ready_file.read_text())
                self.port, self.metrics_port = info["port"], info["metrics_port"]
                self.http_port = info.get("http_port")
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
            return int(health_pb2.HealthCheckResponse.UNKNOWN)
    return int(response.status)


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
    http_port: int | None = None,
    log_path: Path | None = None,
) -> ServiceProcess:
    """`gkt-edge` on 127.0.0.1 as a child process, calling the teacher at `teacher_address` (`http_port`: also serve
    the OpenAI-compatible API)."""
    command = [_bin("gkt-edge"), "--teacher-address", teacher_address, "--host", "127.0.0.1", "--port", str(port)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    if http_port is not None:
        command += ["--http-port", str(http_port)]
    return launch("edge", [*command, *args], log_path=log_path)


def _bin(name: str) -> str:
    """A console script of this environment (beside the running interpreter)."""
    return str(Path(sys.executable).parent / name)
