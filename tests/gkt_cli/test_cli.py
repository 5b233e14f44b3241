"""The command-line entry points: every setting documented in --help, `gkt ask --json` against a live edge."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cloud_teacher.server import TeacherServer
from cloud_teacher.settings import TeacherSettings
from edge_student.server import EdgeServer
from edge_student.settings import EdgeSettings
from gkt_cli.ask import response_to_json
from shared.protocol.gkt.v1 import common_pb2, edge_pb2
from tests.conftest import running_edge

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# `gkt` from this checkout: the console script in the venv may belong to another checkout of the project.
GKT = (sys.executable, "-m", "gkt_cli.main")
EDGE_TOKEN = "cli-test-edge-token-5d2e9a"


async def run(*command: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize(("command", "settings"), [("gkt-teacher", TeacherSettings), ("gkt-edge", EdgeSettings)])
async def test_help_documents_every_setting(command: str, settings: type) -> None:
    code, output = await run(str(BIN / command), "--help")
    assert code == 0, output
    for name, field in settings.model_fields.items():
        assert f"--{name.replace('_', '-')}" in output, f"{command} --help does not mention {name}"
        assert field.description, f"{settings.__name__}.{name} has no description"


async def test_ask_with_the_adaptive_policy_and_escalation(edge_server: EdgeServer) -> None:
    code, output = await run(
        *GKT,
        "ask",
        "What is a prime number?",
        "--edge",
        f"127.0.0.1:{edge_server.port}",
        *("--guidance-tokens", "24", "--max-tokens", "16", "--guidance", "adaptive", "--escalate", "--json"),
    )
    assert code == 0, output
    answer = json.loads(output)
    assert answer["guidance_end"] in ("k_reached", "student_agreed", "teacher_finished")
    assert answer["usage"]["teacher_completion_tokens"] <= 24 + 2 * 8  # K, plus at most two bursts of 8
    assert "bursts" in answer


async def test_ask_with_the_verify_policy(edge_server: EdgeServer) -> None:
    code, output = await run(
        *GKT,
        "ask",
        "What is a prime number?",
        "--edge",
        f"127.0.0.1:{edge_server.port}",
        *("--guidance-tokens", "0", "--max-tokens", "16", "--guidance", "verify", "--draft-tokens", "4"),
        *("--acceptance", "strict", "--temperature", "0", "--json"),
    )
    assert code == 0, output
    answer = json.loads(output)
    assert answer["verification"]["rounds"] >= 1 and answer["guidance_text"] == ""
    assert answer["usage"]["completion_tokens"] <= 16


async def test_ask_json_prints_the_answer_with_usage_and_timings(edge_server: EdgeServer) -> None:
    code, output = await run(
        *GKT,
        "ask",
        "What is a prime number?",
        "--edge",
        f"127.0.0.1:{edge_server.port}",
        "--guidance-tokens",
        "8",
        "--max-tokens",
        "16",
        "--json",
    )
    assert code == 0, output
    answer = json.loads(output)
    for key in ("text", "guidance_text", "student_text", "mode", "degraded", "degraded_reason", "usage", "timings"):
        assert key in answer
    assert answer["mode"] == "gkt"
    assert answer["degraded"] is False and answer["degraded_reason"] == ""  # a word; empty when not degraded
    assert answer["text"] == answer["guidance_text"] + answer["student_text"]
    for key in (
        "teacher_prompt_tokens",
        "teacher_completion_tokens",
        "student_prompt_tokens",
        "student_completion_tokens",
    ):
        assert isinstance(answer["usage"][key], int)
    assert 0 < answer["usage"]["teacher_completion_tokens"] <= 8


async def test_ask_reports_a_clear_error_for_bad_input(edge_server: EdgeServer) -> None:
    code, output = await run(*GKT, "ask", "hi", "--edge", f"127.0.0.1:{edge_server.port}", "--max-tokens", "0")
    assert code == 1
    assert "INVALID_ARGUMENT: max_tokens" in output


@pytest_asyncio.fixture(scope="module")
async def token_edge(teacher_server: TeacherServer) -> AsyncIterator[EdgeServer]:
    """An edge that requires a bearer token from apps."""
    async with running_edge(teacher_server.port, auth_token=EDGE_TOKEN) as edge:
        yield edge


async def ask(edge: EdgeServer, *options: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`gkt ask` from this checkout (not the console script, which may point at another one): code, stdout, stderr."""
    environment = {k: v for k, v in os.environ.items() if k != "GKT_EDGE_AUTH_TOKEN"} | (env or {})
    process = await asyncio.create_subprocess_exec(
        *(*GKT, "ask", "Name a colour."),
        *("--edge", f"127.0.0.1:{edge.port}", "--mode", "student", "--max-tokens", "4", "--json", *options),
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_ask_reads_the_token_from_the_edges_own_env_var(token_edge: EdgeServer) -> None:
    # The same variable the edge reads for the token it accepts: set once, both sides agree.
    code, out, err = await ask(token_edge, env={"GKT_EDGE_AUTH_TOKEN": EDGE_TOKEN})
    assert code == 0, err
    assert json.loads(out)["student_text"]
    assert "warning" not in err.lower()

    response = edge_pb2.GenerateResponse(
        mode=edge_pb2.MODE_GKT,
        degraded=True,
        degraded_reason=edge_pb2.DEGRADED_REASON_CIRCUIT_OPEN,
        finish_reason=common_pb2.FINISH_REASON_LENGTH,
    )
    answer = response_to_json(response)
    assert (answer["mode"], answer["degraded"], answer["degraded_reason"], answer["finish_reason"]) == (
        "gkt",
        True,
        "circuit_open",
        "length",
    )
    not_degraded = response_to_json(edge_pb2.GenerateResponse(mode=edge_pb2.MODE_STUDENT_ONLY))
    assert (not_degraded["mode"], not_degraded["degraded"], not_degraded["degraded_reason"]) == ("student", False, "")


async def test_ask_reads_the_token_from_a_file(token_edge: EdgeServer, tmp_path: Path) -> None:
    token_file = tmp_path / "edge-token"
    token_file.write_text(f"{EDGE_TOKEN}\n# only the first line is the token\n")
    # The file wins over the env var (a wrong token there would be refused with PERMISSION_DENIED).
    code, out, err = await ask(
        token_edge, "--token-file", str(token_file), env={"GKT_EDGE_AUTH_TOKEN": "a-wrong-token-for-this-edge"}
    )
    assert code == 0, err
    assert json.loads(out)["student_text"]


async def test_ask_without_a_token_says_how_to_give_one(token_edge: EdgeServer, tmp_path: Path) -> None:
    code, out, err = await ask(token_edge)
    assert code == 1 and out == ""
    assert "UNAUTHENTICATED" in err
    assert "GKT_EDGE_AUTH_TOKEN" in err and "--token-file" in err
    code, _, err = await ask(token_edge, "--token-file", str(tmp_path / "missing"))
    assert code == 2
    assert "--token-file: cannot read" in err


async def test_ask_token_on_the_command_line_works_but_warns(token_edge: EdgeServer) -> None:
    # It beats the env var, so a wrong one there must not matter.
    code, out, err = await ask(token_edge, "--token", EDGE_TOKEN, env={"GKT_EDGE_AUTH_TOKEN": "not-this-one-either"})
    assert code == 0, err
    assert json.loads(out)["student_text"]
    assert "warning: --token" in err
    assert "process list" in err and "shell history" in err
    assert "--token-file" in err and "GKT_EDGE_AUTH_TOKEN" in err
    assert EDGE_TOKEN not in err
