"""llama-cpp-python's OpenAI-compatible server as a real peer for tests: started on a free port, awaited, stopped."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from shared.catalog import resolve_gguf
from tests.conftest import closed_port


@contextlib.contextmanager
def llama_server(*options: str, model: str = "gemma3-270m", api_key: str = "") -> Iterator[str]:
    """`python -m llama_cpp.server` on a catalog model with one thread and the given extra options; yields its /v1
    base URL once it lists its models, and stops it at the end."""
    port = closed_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf(model))]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", *options]
    if api_key:
        command += ["--api_key", api_key]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/models", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        process.wait(30)
