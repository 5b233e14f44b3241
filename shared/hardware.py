"""A one-line description of the machine a tier runs on, and the `ServerInfo` a tier's `GetInfo` answers with."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path

from shared.protocol.domain import ServerInfo

# The vector extensions that decide which kernels llama.cpp and vLLM can use on x86.
_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


@functools.cache
def hardware_summary() -> str:
    """E.g. "2 cores, AMD EPYC (avx2), 23 GiB RAM": CPU model, usable cores, vector extensions, memory."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vector = ", ".join(f for f in _VECTOR_FLAGS if f in flags) or "no AVX2"
    memory = ""
    try:
        total_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {total_kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cores} cores, {name} ({vector}){memory}"


def package_version() -> str:
    try:
        return importlib.metadata.version("gkt-serving")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def has_cuda() -> bool:
    """True when torch is installed and sees a CUDA device (imported lazily: the edge has no torch)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def server_info(
    tier: str,
    model: str,
    *,
    model_file: str = "",
    backend: str = "",
    dtype: str = "",
    threads: int = 0,
    slots: int = 0,
    hardware: str = "",
) -> ServerInfo:
    """What a server of this package runs, on this machine's hardware (unless `hardware` says otherwise) and this
    package's version."""
    return ServerInfo(
        tier=tier,
        model=model,
        model_file=model_file,
        backend=backend,
        dtype=dtype,
        threads=threads,
        slots=slots,
        hardware=hardware or hardware_summary(),
        version=package_version(),
    )
