"""`gkt bench` on the real services: a few CSQA questions in every mode give a well-formed results JSON and plots."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import measure
from benchmarks.checkpoint import checkpoint_path
from benchmarks.gkt_bench import (
    CHAT_MAX_TOKENS,
    PAPER_GUIDANCE_TOKENS,
    BenchConfig,
    config_from_args,
    load_questions,
    run_benchmark,
)
from benchmarks.measure import ModeMeasurer
from benchmarks.report import RESULT_FIELDS
from benchmarks.runner import FIXED, USAGE_FIELDS, ModeRun, ModeSpec, PolicySpec, RequestSettings
from benchmarks.services import bench_services
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
    "workload",
    "cache_control",
    "runs",
    "run_wall_seconds",
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
    chat = config_from_args(["--dataset", "gsm8k", "--workload", "chat"]).resolved()
    assert chat.workload == "chat" and chat.max_tokens == CHAT_MAX_TOKENS["gsm8k"]
    assert chat.out is not None and chat.out.name == "gsm8k_chat.json"
    assert config.restart_between_modes and not config_from_args(["--no-restart"]).restart_between_modes


@pytest.mark.parametrize(
    "argv",
    [
        ["--guidance-tokens", "0"],
        ["--modes", "teacher,oracle"],
        ["--limit", "0"],
        ["--policy", "greedy"],
        ["--policy", "adaptive:flor=3"],
        ["--workload", "dialogue"],
        ["--teacher-pid", "0"],
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

    # Uncertainty and compute on every row; caches of services the bench did not start are said to be uncontrolled.
    assert document["cache_control"]["method"] == "none" and "NOT controlled" in document["cache_control"]["note"]
    assert document["workload"] == "fewshot" and document["runs"][-1]["modes_measured"] == list(results)
    for key, row in results.items():
        low, high = row["accuracy_ci"]
        assert low <= row["accuracy"] <= high, key
        assert row["agreement_with_teacher"]["n"] == 3
        assert row["teacher_cpu_seconds"] is None  # no teacher process given
        assert row["fingerprint"]["questions"] == [a["example_id"] for a in answers if a["mode"] == key]
    assert results["teacher"]["vs_teacher"] is None and results["gkt@2"]["vs_teacher"]["n"] == 3
    assert results["gkt@2"]["vs_student"]["n"] == 3 and results["gkt@2"]["speedup_vs_teacher_ci"] is not None

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
    resumed) and runs only the rest. A later run that adds a policy reuses every finished row of the complete
    results and measures only the new one; a run of other questions reuses nothing."""
    calls: list[str] = []
    real_run_mode = measure.run_mode

    async def run_mode(stub: Any, spec: ModeSpec, *args: Any, **kwargs: Any) -> Any:
        calls.append(spec.key)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise RuntimeError("interrupted")
        return await real_run_mode(stub, spec, *args, **kwargs)

    monkeypatch.setattr(measure, "run_mode", run_mode)
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
        first_wall = document["results"]["gkt@3"]["wall_seconds"]

        # A later run adds a policy: the four rows of the complete results are reused, only the new one runs.
        calls.clear()
        eager = PolicySpec.parse("eager=adaptive:floor=1,window=1,top1=0,logprob=-1e9,k=3")
        document = await run_benchmark(replace(config, resume=True, policies=(FIXED, eager)))
        assert calls == ["gkt@3/eager"]
        assert document["resumed_modes"] == ["teacher", "student", "gkt@2", "gkt@3"]
        assert document["results"]["gkt@3"]["wall_seconds"] == first_wall
        assert len(document["runs"]) == 2 and document["runs"][-1]["modes_measured"] == ["gkt@3/eager"]
        assert all(run["wall_seconds"] > 0 for run in document["runs"])

        # Other questions, or another budget: nothing is reused.
        calls.clear()
        document = await run_benchmark(replace(config, resume=True, limit=1, modes=("teacher",)))
        assert calls == ["teacher"] and document["resumed_modes"] == []
        calls.clear()
        document = await run_benchmark(replace(config, resume=True, max_tokens=5, modes=("teacher",)))
        assert calls == ["teacher"] and document["resumed_modes"] == []


def _teacher_uncached(run: ModeRun) -> dict[str, int]:
    """Per question: the teacher's prompt tokens it had to compute (not read from its prefix cache)."""
    return {
        r.example_id: r.usage["teacher_prompt_tokens"] - r.usage["teacher_cached_prompt_tokens"] for r in run.records
    }


def _student_uncached(run: ModeRun) -> dict[str, int]:
    return {
        r.example_id: r.usage["student_prompt_tokens"] - r.usage["student_cached_prompt_tokens"] for r in run.records
    }


def _mean_teacher_ttft(run: ModeRun) -> float:
    return sum(r.timings["teacher_time_to_first_token_seconds"] for r in run.records) / len(run.records)


# teacher-only twice, GKT, teacher-only again; then student-only twice: every repeat must find the caches as the
# first run of its kind found them.
FAIRNESS_SEQUENCE = [
    ModeSpec("teacher"),
    ModeSpec("teacher"),
    ModeSpec("gkt", 2),
    ModeSpec("teacher"),
    ModeSpec("student"),
    ModeSpec("student"),
]


async def measure_sequence(restart: bool) -> list[ModeRun]:
    """The fairness sequence on services the bench starts (the tiny llama.cpp pair), 3 CSQA questions all in flight
    at once (so that a prompt left in a llama.cpp prefix cache by the previous mode would be found)."""
    config = BenchConfig(
        dataset="csqa",
        limit=3,
        guidance_tokens=(2,),
        max_tokens=6,
        concurrency=3,
        teacher_backend="llamacpp",
        teacher_model="gemma3-270m",
        students=("smollm2-135m",),
        progress=False,
        restart_between_modes=restart,
    ).resolved()
    prompts, examples = load_questions(config)
    settings = RequestSettings(max_tokens=6, temperature=0.0, seed=0, stop=prompts.stop)
    async with bench_services(config) as services:
        measurer = ModeMeasurer(config, services, prompts, examples, settings)
        await measurer.warm(list(services.addresses))
        return [await measurer.measure(spec) for spec in FAIRNESS_SEQUENCE]


async def test_every_mode_starts_from_the_same_cache_state() -> None:
    """Issue 19's fairness test: the same mode twice in a row, and teacher-only before and after a GKT mode, see the
    same uncached prompt tokens on every question (on the teacher, and on the edge's student), the shared few-shot
    prefix warm and nothing of the evaluated questions, and the same teacher time to first token within noise."""
    runs = await measure_sequence(restart=True)
    teacher_runs = [runs[0], runs[1], runs[2], runs[3]]
    first = _teacher_uncached(runs[0])
    for index, run in enumerate(teacher_runs[1:], start=1):
        assert _teacher_uncached(run) == first, f"run {index} ({run.spec.key}) found other teacher cache contents"
    cached = {r.usage["teacher_cached_prompt_tokens"] for run in teacher_runs for r in run.records}
    assert len(cached) == 1 and cached.pop() > 0, "the shared prefix, and only it, is cached for every question"
    assert _student_uncached(runs[5]) == _student_uncached(runs[4])
    student_cached = {r.usage["student_cached_prompt_tokens"] for r in runs[4].records + runs[5].records}
    assert len(student_cached) == 1 and student_cached.pop() > 0
    ttft = [_mean_teacher_ttft(runs[i]) for i in (0, 1, 3)]
    assert max(ttft) <= 3 * min(ttft) + 0.05, f"teacher time to first token differs beyond noise: {ttft}"
    # Restarted only where an earlier mode used the tier (student-only after teacher-only needs none), and the
    # restart is kept out of the mode's wall time.
    assert [run.restart_seconds > 0 for run in runs] == [False, True, True, True, False, True]
    assert all(run.teacher_cpu_seconds is not None and run.teacher_cpu_seconds >= 0 for run in runs)
    assert runs[0].teacher_cpu_seconds and runs[0].teacher_cpu_seconds > 0
    assert all(run.edge_cpu_seconds for run in runs[4:])


async def test_without_restarts_a_mode_finds_the_previous_modes_questions_in_the_caches() -> None:
    """Why the restarts exist (the ordering before issue 19, `--no-restart`): a repeat of a mode reads a question
    the previous mode left in the teacher's cache, and the same on the student, so the repeat looks cheaper."""
    runs = await measure_sequence(restart=False)
    # The first mode after the warm-up finds the fair state; its repeat reads one of its questions from the cache.
    assert sum(_teacher_uncached(runs[1]).values()) < sum(_teacher_uncached(runs[0]).values())
    # Some answers read more than the shared prefix from the cache, on both tiers (with restarts, none does).
    teacher_cached = {r.usage["teacher_cached_prompt_tokens"] for run in runs[:4] for r in run.records}
    student_cached = {r.usage["student_cached_prompt_tokens"] for run in runs[4:] for r in run.records}
    assert len(teacher_cached) > 1 and len(student_cached) > 1
    assert all(run.restart_seconds == 0 for run in runs)


async def test_chat_workload_sends_the_questions_as_chat_messages(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    """`--workload chat`: the same questions, zero-shot, each tier formatting the system prompt and the user message
    for its own model; no few-shot stop sequences (the chat template ends the turn)."""
    async with running_edge(teacher_server.port, n_slots=2) as edge:
        config = BenchConfig(
            dataset="csqa",
            workload="chat",
            limit=2,
            guidance_tokens=(2,),
            max_tokens=8,
            concurrency=2,
            edge=f"127.0.0.1:{edge.port}",
            out=tmp_path / "csqa_chat.json",
            progress=False,
        )
        chat = await run_benchmark(config)
        few_shot = await run_benchmark(replace(config, workload="fewshot", out=None))
    assert chat["workload"] == "chat" and chat["shots"] == 0 and chat["stop"] == []
    assert "So the answer is (X)." in chat["system_prompt"] and "code" in chat["system_prompt"]
    assert (
        chat["results"]["teacher"]["fingerprint"]["questions"]
        == few_shot["results"]["teacher"]["fingerprint"]["questions"]
    )
    # Zero-shot prompts are a fraction of the 7-shot ones, on both tiers.
    for mode, tier in (("teacher", "teacher"), ("student", "student")):
        chat_prompt = chat["results"][mode]["tokens"][f"{tier}_prompt_tokens"]
        few_shot_prompt = few_shot["results"][mode]["tokens"][f"{tier}_prompt_tokens"]
        assert 0 < chat_prompt < few_shot_prompt / 3, mode
