"""`gkt bench` on the real services: a few CSQA questions in every mode give a well-formed results JSON and plots."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gkt_bench
from benchmarks.checkpoint import Checkpoint, checkpoint_path
from benchmarks.gkt_bench import PAPER_GUIDANCE_TOKENS, BenchConfig, config_from_args, run_benchmark
from benchmarks.report import RESULT_FIELDS
from benchmarks.runner import FIXED, USAGE_FIELDS, ModeRun, ModeSpec, PolicySpec
from cloud_teacher.server import TeacherServer
from edge_student.settings import EdgeSettings
from tests.conftest import running_edge

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOP_LEVEL_KEYS = {
    "dataset",
    "n",
    "shots",
    "models",
    "services",
    "concurrency",
    "seed",
    "temperature",
    "max_tokens",
    "guidance_tokens",
    "prices_per_1k_tokens",
    "date",
    "machine",
    "results",
    "files",
}


def test_command_line_defaults_follow_the_paper() -> None:
    config = config_from_args(["--dataset", "gsm8k"]).resolved()
    assert config.guidance_tokens == (PAPER_GUIDANCE_TOKENS["gsm8k"],) == (40,)
    assert config.max_tokens == 340 and config.modes == ("teacher", "student", "gkt")
    assert config.edge is None and config.teacher_backend == "vllm"
    assert config.out is not None and config.out.name == "gsm8k.json"
    csqa = config_from_args(["--dataset", "csqa", "--guidance-tokens", "30,10", "--limit", "5"]).resolved()
    assert (csqa.guidance_tokens, csqa.max_tokens, csqa.limit) == ((30, 10), 130, 5)
    assert [spec.key for spec in csqa.mode_specs()] == ["teacher", "student", "gkt@10", "gkt@30"]
    adaptive = config_from_args(
        [
            "--guidance-tokens",
            "40",
            "--guidance-policy",
            "fixed",
            "--policy",
            "a4=adaptive:floor=8,window=4,top1=0.75,escalate",
        ]
    ).resolved()
    assert [spec.key for spec in adaptive.mode_specs()] == ["teacher", "student", "gkt@40", "gkt@40/a4"]
    policy = adaptive.policies[1].policy
    assert (policy.floor_tokens, policy.window, policy.min_top1_fraction, policy.escalate) == (8, 4, 0.75, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--guidance-tokens", "0"],
        ["--modes", "teacher,oracle"],
        ["--limit", "0"],
        ["--policy", "greedy"],
        ["--policy", "adaptive:flor=3"],
    ],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(argv)


def read_outputs(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The results JSON and the per-answer records it points to."""
    document = json.loads(out.read_text())
    answers = [json.loads(line) for line in Path(document["files"]["answers"]).read_text().splitlines()]
    return document, answers


async def test_small_real_run_writes_results_json_and_plots(teacher_server: TeacherServer, tmp_path: Path) -> None:
    # Generous guidance deadlines, as `gkt bench` gives the edges it starts: no answer may come back degraded
    # because the teacher was busy with the other requests.
    async with running_edge(
        teacher_server.port, guidance_first_token_timeout_seconds=300, guidance_timeout_seconds=300, n_slots=3
    ) as edge:
        out = tmp_path / "csqa.json"
        config = BenchConfig(
            dataset="csqa",
            limit=3,
            guidance_tokens=(2,),
            max_tokens=8,
            concurrency=3,
            edge=f"127.0.0.1:{edge.port}",
            out=out,
            progress=False,
            warm_up=False,
            # An adaptive policy that always agrees after one token: its rows stop the guidance early.
            policies=(FIXED, PolicySpec.parse("eager=adaptive:floor=1,window=1,top1=0,logprob=-1e9")),
        )
        returned = await run_benchmark(config)

    document, answers = read_outputs(out)
    assert document == json.loads(json.dumps(returned))
    assert set(document) >= TOP_LEVEL_KEYS
    assert (document["dataset"], document["n"], document["shots"], document["max_tokens"]) == ("csqa", 3, 7, 8)
    prices = document["prices_per_1k_tokens"]
    assert prices["teacher"]["prompt_per_1k"] == EdgeSettings().teacher_price_prompt_per_1k
    assert prices["teacher"]["cached_prompt_per_1k"] == pytest.approx(0.1 * prices["teacher"]["prompt_per_1k"])
    # The models named are the ones that ran, as the servers report them (not the built-in defaults).
    assert document["models"]["teacher"].startswith("gemma3-270m (gemma-3-270m-q4_k_m.gguf), on llamacpp")
    assert document["models"]["students"][""].startswith("smollm2-135m (SmolLM2-135M-Instruct.Q4_1.gguf), on llamacpp")
    assert document["models"]["servers"]["edges"][""]["threads"] == 1
    assert document["machine"]["cores"] >= 1

    results = document["results"]
    assert list(results) == ["teacher", "student", "gkt@2", "gkt@2/eager"]
    assert results["gkt@2/eager"]["policy"] == "eager" and results["gkt@2"]["policy"] == "fixed"
    assert results["gkt@2"]["stopped_early"] == 0
    assert document["guidance_policies"]["eager"]["kind"] == "KIND_ADAPTIVE"
    for key, row in results.items():
        assert set(RESULT_FIELDS) <= set(row), key
        assert row["n"] == 3
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["correct"] + row["unparsed"] + row["failed"] <= row["n"]
        assert row["failed"] == 0 and row["degraded"] == 0, key
        assert row["wall_seconds"] > 0 and row["requests_per_second"] > 0
        assert row["cost"] > 0 and row["speedup_vs_teacher"] > 0 and row["cost_ratio_vs_teacher"] > 0
        assert set(row["tokens"]) == set(USAGE_FIELDS)
    teacher, student, gkt = results["teacher"], results["student"], results["gkt@2"]
    assert teacher["speedup_vs_teacher"] == 1.0 and teacher["cost_ratio_vs_teacher"] == 1.0
    assert teacher["tokens"]["teacher_prompt_tokens"] > 0 and teacher["tokens"]["student_prompt_tokens"] == 0
    assert 0 < teacher["tokens"]["teacher_completion_tokens"] <= 3 * 8
    assert student["tokens"]["student_prompt_tokens"] > 0 and student["tokens"]["teacher_prompt_tokens"] == 0
    assert 0 < gkt["tokens"]["teacher_completion_tokens"] <= 3 * 2
    assert gkt["tokens"]["student_guidance_tokens"] > 0
    assert gkt["guidance_tokens"] == 2 and teacher["guidance_tokens"] is None

    assert len(answers) == 12 and {a["mode"] for a in answers} == set(results)
    for answer in answers:
        assert answer["outcome"] in ("correct", "wrong", "unparsed")
        gkt = answer["mode"].startswith("gkt@")
        assert (answer["guidance_end"] in ("k_reached", "teacher_finished", "student_agreed")) == gkt, answer
        assert answer["text"] == answer["guidance_text"] + answer["student_text"]
        assert (answer["extracted"] is None) == (answer["outcome"] == "unparsed")

    plots = [Path(p) for p in document["files"]["plots"]]
    assert sorted(p.name for p in plots) == [
        "csqa_accuracy_speedup_vs_k.png",
        "csqa_accuracy_vs_teacher_tokens.png",
        "csqa_cost_vs_accuracy.png",
    ]
    for plot in plots:
        assert plot.parent == tmp_path
        assert plot.stat().st_size > 1000 and plot.read_bytes().startswith(PNG_MAGIC)


async def test_an_interrupted_run_resumes_with_the_rows_it_finished(
    teacher_server: TeacherServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-hour run stopped in its third row: `--resume` keeps the two finished rows (same answers, marked as
    resumed) and runs only the rest; a run of other questions does not reuse them."""
    calls: list[str] = []
    real_run_mode = gkt_bench.run_mode

    async def run_mode(stub: Any, spec: ModeSpec, *args: Any, **kwargs: Any) -> Any:
        calls.append(spec.key)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise RuntimeError("interrupted")
        return await real_run_mode(stub, spec, *args, **kwargs)

    monkeypatch.setattr(gkt_bench, "run_mode", run_mode)
    async with running_edge(teacher_server.port, n_slots=2) as edge:
        out = tmp_path / "csqa.json"
        config = BenchConfig(
            dataset="csqa",
            limit=2,
            guidance_tokens=(2, 3),
            max_tokens=4,
            concurrency=2,
            edge=f"127.0.0.1:{edge.port}",
            out=out,
            progress=False,
            warm_up=False,
        )
        interrupt_at: int | None = 3
        with pytest.raises(RuntimeError, match="interrupted"):
            await run_benchmark(config)
        progress = checkpoint_path(out)
        finished = [json.loads(line) for line in progress.read_text().splitlines()]
        assert [row["mode"] for row in finished] == ["teacher", "student"] and not out.exists()

        calls.clear()
        interrupt_at = None
        document = await run_benchmark(replace(config, resume=True))
        assert calls == ["gkt@2", "gkt@3"], "the finished rows were run again"
        assert document["resumed_modes"] == ["teacher", "student"]
        assert list(document["results"]) == ["teacher", "student", "gkt@2", "gkt@3"]
        _, answers = read_outputs(out)
        recorded = {row["mode"]: [r["text"] for r in row["records"]] for row in finished}
        for mode in ("teacher", "student"):
            assert [a["text"] for a in answers if a["mode"] == mode] == recorded[mode]
        assert not progress.exists(), "a finished run leaves no progress file"

        # Rows recorded for other questions are not reused.
        Checkpoint(progress, {"questions": ["another"]}).save(ModeRun(ModeSpec("teacher"), [], 1.0))
        calls.clear()
        document = await run_benchmark(replace(config, resume=True, modes=("teacher",)))
        assert calls == ["teacher"] and document["resumed_modes"] == []
