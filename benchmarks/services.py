"""The services a benchmark run talks to: the running edge it was pointed at, or a teacher and one edge per student
that it starts, restarts (for a clean cache) and stops; and what they report they run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.json_format import MessageToDict

from benchmarks.process_cpu import descendants
from shared.catalog import cache_dir
from shared.launch import ServiceProcess, launch_edge, launch_teacher
from shared.protocol.gkt.v1 import common_pb2, edge_pb2_grpc

if TYPE_CHECKING:
    from benchmarks.gkt_bench import BenchConfig

# Launched services wait this long for guidance before answering degraded: a long teacher-only answer behind a
# queue of others must not be cut off by the edge's interactive deadlines (10 s / 30 s by default).
LAUNCHED_GUIDANCE_TIMEOUT_SECONDS = 1800.0


@dataclass
class Services:
    """The edges a run talks to (by student label), and the processes behind them when the bench started them.

    Launched services can be restarted: a restart of the teacher restarts the edges too (they are started with
    the teacher's address, and the teacher comes back on a new free port)."""

    config: BenchConfig
    addresses: dict[str | None, str] = field(default_factory=dict)
    teacher: ServiceProcess | None = None
    edges: dict[str | None, ServiceProcess] = field(default_factory=dict)
    channels: dict[str | None, grpc.aio.Channel] = field(default_factory=dict)

    @property
    def launched(self) -> bool:
        return self.config.edge is None

    def stub(self, label: str | None) -> edge_pb2_grpc.EdgeServiceStub:
        return edge_pb2_grpc.EdgeServiceStub(self.channels[label])

    def teacher_pid(self) -> int | None:
        return self.teacher.process.pid if self.teacher is not None else self.config.teacher_pid

    def edge_pids(self, label: str | None) -> list[int]:
        edge = self.edges.get(label)
        return [edge.process.pid] if edge is not None else []

    async def start(self) -> None:
        """The running edge at `config.edge`, or a teacher and one edge per student started on free ports (their
        logs go to `<cache>/run/bench-*.log`)."""
        if not self.launched:
            assert self.config.edge is not None
            self.addresses = {None: self.config.edge}
        else:
            await self._start_teacher()
            for label in self.config.student_labels():
                await self._start_edge(label)
        await self._open_channels()

    async def restart(self, labels: Sequence[str | None] | None) -> None:
        """Restarts the teacher and every edge (`labels` None), or only the edges of `labels`."""
        await self._close_channels()
        if labels is None:
            await self._stop(list(self.edges.values()) + ([self.teacher] if self.teacher else []))
            self.edges.clear()
            await self._start_teacher()
            labels = self.config.student_labels()
        for label in labels:
            if label in self.edges:
                await self._stop([self.edges.pop(label)])
            await self._start_edge(label)
        await self._open_channels()

    async def stop(self) -> None:
        await self._close_channels()
        await self._stop(list(self.edges.values()) + ([self.teacher] if self.teacher else []))
        self.edges.clear()
        self.teacher = None

    async def _start_teacher(self) -> None:
        run_dir = cache_dir() / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "bench-teacher.log"
        args = ["--n-slots", str(self._slots()), "--log-level", "WARNING"]
        if self.config.teacher_model:
            args += ["--model", self.config.teacher_model]
        self.teacher = launch_teacher(self.config.teacher_backend, args, log_path=log)
        await _wait_ready(self.teacher, 1800, log)

    async def _start_edge(self, label: str | None) -> None:
        assert self.teacher is not None
        student = dict(zip(self.config.student_labels(), self.config.students, strict=True))[label]
        log = cache_dir() / "run" / f"bench-edge-{student}.log"
        timeout = str(LAUNCHED_GUIDANCE_TIMEOUT_SECONDS)
        slots = str(self._slots())
        edge = launch_edge(
            f"127.0.0.1:{self.teacher.port}",
            [
                *("--model", student, "--n-slots", slots, "--max-queue", str(max(64, self.config.concurrency))),
                *("--log-level", "WARNING", "--guidance-first-token-timeout-seconds", timeout),
                *("--guidance-timeout-seconds", timeout, "--teacher-only-timeout-seconds", timeout),
            ],
            log_path=log,
        )
        self.edges[label] = edge
        await _wait_ready(edge, 600, log)
        self.addresses[label] = f"127.0.0.1:{edge.port}"

    def _slots(self) -> int:
        return max(1, min(64, self.config.concurrency))

    async def _open_channels(self) -> None:
        self.channels = {label: grpc.aio.insecure_channel(address) for label, address in self.addresses.items()}

    async def _close_channels(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        self.channels = {}

    @staticmethod
    async def _stop(processes: Sequence[ServiceProcess]) -> None:
        for process in processes:
            # A restart must not leave a child behind (vLLM's engine core holds gigabytes): any descendant still
            # there once the service has exited is killed, by its id.
            children = descendants(process.process.pid)
            await asyncio.to_thread(process.stop)
            for pid in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def bench_services(config: BenchConfig) -> AsyncIterator[Services]:
    """The run's services, started (or found) on entry and, when launched here, stopped on exit."""
    services = Services(config)
    try:
        await services.start()
        yield services
    finally:
        await services.stop()


async def _wait_ready(service: ServiceProcess, seconds: float, log: Path) -> None:
    try:
        await asyncio.to_thread(service.wait_ready, seconds)
    except (RuntimeError, TimeoutError) as error:
        raise RuntimeError(f"{error} (its log: {log})") from None


def describe(info: common_pb2.ServerInfo) -> str:
    """One line naming what a server ran: model, file, engine, dtype, threads, slots, hardware."""
    parts = [f"{info.model} ({Path(info.model_file).name or info.model_file})", f"on {info.backend}"]
    if info.dtype:
        parts.append(info.dtype)
    parts.append(f"{info.threads} thread(s)" if info.threads else "engine-chosen threads (vLLM: one worker core)")
    parts.append(f"{info.slots} slots")
    return ", ".join(parts) + f"; {info.hardware}"


async def servers_info(addresses: dict[str | None, str]) -> dict[str, Any]:
    """What each edge and the teacher report they run (`GetInfo`), for the results document."""
    edges: dict[str, Any] = {}
    teacher: common_pb2.ServerInfo | None = None
    for label, address in addresses.items():
        async with grpc.aio.insecure_channel(address) as channel:
            info = await edge_pb2_grpc.EdgeServiceStub(channel).GetInfo(common_pb2.GetInfoRequest(), timeout=30)
        edges[label or ""] = info.edge
        if info.HasField("teacher"):
            teacher = info.teacher
    return {
        "teacher": describe(teacher) if teacher is not None else "unknown (the edge could not reach its teacher)",
        "students": {label: describe(info) for label, info in edges.items()},
        "servers": {
            "teacher": MessageToDict(teacher, preserving_proto_field_name=True) if teacher is not None else None,
            "edges": {label: MessageToDict(info, preserving_proto_field_name=True) for label, info in edges.items()},
        },
    }
