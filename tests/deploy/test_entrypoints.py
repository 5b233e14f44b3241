"""The images' exact entrypoints, environment and health checks, run here on the default models (no Docker engine
on this machine: the commands the containers would run are run directly, with ports and cache folder remapped)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx

from shared.catalog import cache_dir
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"
BIN = Path(sys.executable).parent


def final_stage(dockerfile: Path) -> str:
    text = dockerfile.read_text().replace("\\\n", " ")
    return re.split(r"^FROM .*$", text, flags=re.MULTILINE)[-1]


def image_env(stage: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", stage, flags=re.MULTILINE):
        for key, value in re.findall(r"(\w+)=(\S+)", line):
            env[key] = value
    env.pop("PATH", None)  # the image's venv path; here the project's venv is used
    return env


def json_instruction(stage: str, name: str) -> list[str]:
    match = re.search(rf"^{name}\s+(?:--\S+\s+)*(?:CMD\s+)?(\[.*\])\s*$", stage, flags=re.MULTILINE)
    assert match, f"no {name} in the final stage"
    return json.loads(match.group(1))


class Container:
    """The image's entrypoint as a local process with the image's environment."""

    def __init__(self, dockerfile: str, overrides: dict[str, str]) -> None:
        stage = final_stage(DOCKER / dockerfile)
        self.entrypoint = json_instruction(stage, "ENTRYPOINT")
        self.healthcheck = json_instruction(stage, "HEALTHCHECK")
        # The image's /models volume is this checkout's cache folder; ports are free ones.
        self.env = {**os.environ, **image_env(stage), "GKT_CACHE_DIR": str(cache_dir()), **overrides}
        log = open(cache_dir() / "run" / f"{dockerfile}.log", "wb")  # noqa: SIM115 (the child writes to it)
        self.process = subprocess.Popen(
            [str(BIN / self.entrypoint[0]), *self.entrypoint[1:]], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def healthy(self) -> bool:
        """Runs the image's HEALTHCHECK command exactly (python from the project's venv)."""
        command = [sys.executable if self.healthcheck[0] == "python" else self.healthcheck[0], *self.healthcheck[1:]]
        return subprocess.run(command, env=self.env, capture_output=True, timeout=30).returncode == 0

    async def wait_healthy(self, within: float) -> None:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(self.healthy):
            assert self.process.poll() is None, f"{self.entrypoint} exited with {self.process.returncode}"
            assert time.monotonic() < deadline, f"{self.entrypoint} not healthy within {within}s"
            await asyncio.sleep(1)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


async def test_cloud_cpu_and_edge_images_come_up_and_answer() -> None:
    (cache_dir() / "run").mkdir(parents=True, exist_ok=True)
    teacher_port, edge_port, edge_http_port = closed_port(), closed_port(), closed_port()
    teacher = Container(
        "Dockerfile.cloud-cpu", {"GKT_TEACHER_PORT": str(teacher_port), "GKT_TEACHER_METRICS_PORT": str(closed_port())}
    )
    edge = Container(
        "Dockerfile.edge",
        {
            "GKT_EDGE_PORT": str(edge_port),
            "GKT_EDGE_HTTP_PORT": str(edge_http_port),  # the image turns the OpenAI-compatible API on at 8080
            "GKT_EDGE_METRICS_PORT": str(closed_port()),
            "GKT_EDGE_TEACHER_ADDRESS": f"dns:///localhost:{teacher_port}",
        },
    )
    try:
        assert not await asyncio.to_thread(teacher.healthy), "healthy before the model was loaded"
        await teacher.wait_healthy(within=600)
        await edge.wait_healthy(within=300)
        async with httpx.AsyncClient() as http:  # the HTTP door the image opens (the Kubernetes readiness probe's)
            assert (await http.get(f"http://127.0.0.1:{edge_http_port}/health", timeout=10)).status_code == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_port}") as channel:
            response = await edge_pb2_grpc.EdgeServiceStub(channel).Generate(
                edge_pb2.GenerateRequest(
                    conversation=common_pb2.Conversation(
                        messages=[common_pb2.ChatMessage(role="user", content="What is a lighthouse?")]
                    ),
                    guidance_tokens=6,
                    max_tokens=8,
                ),
                timeout=120,
            )
        assert not response.degraded, response.degraded_reason
        assert response.guidance_text and response.text.startswith(response.guidance_text)
        assert response.usage.teacher_completion_tokens > 0
    finally:
        assert edge.stop() == 0
        assert teacher.stop() == 0
