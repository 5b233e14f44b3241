"""The command-line entry points: every setting documented in --help, `gkt ask --json` against a live edge."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from cloud_teacher.settings import TeacherSettings
from edge_student.server import EdgeServer
from edge_student.settings import EdgeSettings
from gkt_cli.ask import response_to_json
from shared.protocol.gkt.v1 import common_pb2, edge_pb2

BIN = Path(sys.executable).parent


async def run(*command: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
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


async def test_ask_json_prints_the_answer_with_usage_and_timings(edge_server: EdgeServer) -> None:
    code, output = await run(
        str(BIN / "gkt"),
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
    code, output = await run(
        str(BIN / "gkt"), "ask", "hi", "--edge", f"127.0.0.1:{edge_server.port}", "--max-tokens", "0"
    )
    assert code == 1
    assert "INVALID_ARGUMENT: max_tokens" in output


def test_ask_json_writes_enums_as_words() -> None:
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
