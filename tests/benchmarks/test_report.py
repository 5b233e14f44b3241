"""Results arithmetic on made-up runs: unparsed and failed answers count as wrong, ratios, costs, the table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.report import RESULT_FIELDS, build_results, main, markdown_table, policy_comparison, policy_table
from benchmarks.runner import AnswerRecord, ModeRun, ModeSpec, PolicySpec
from edge_student.settings import EdgeSettings

PRICES = EdgeSettings().prices()


def record(outcome: str, **usage: int) -> AnswerRecord:
    answer = AnswerRecord(index=0, example_id="x", gold="A", outcome=outcome, latency_seconds=1.0)
    answer.usage.update(usage)
    return answer


def numbered(records: list[AnswerRecord]) -> list[AnswerRecord]:
    """Copies of the records as the answers to questions q0, q1, ... (runs are paired by question)."""
    return [replace(r, index=i, example_id=f"q{i}", usage=dict(r.usage)) for i, r in enumerate(records)]


def runs() -> list[ModeRun]:
    teacher = record("correct", teacher_prompt_tokens=500, teacher_completion_tokens=100)
    student = record("correct", student_prompt_tokens=520, student_completion_tokens=110)
    gkt = record("correct", teacher_prompt_tokens=500, teacher_completion_tokens=30, student_prompt_tokens=550)
    gkt.usage["student_completion_tokens"] = 80
    return [
        ModeRun(ModeSpec("teacher"), numbered([teacher, teacher, record("wrong", teacher_prompt_tokens=500)]), 30.0),
        ModeRun(ModeSpec("student"), numbered([student, record("unparsed"), record("failed")]), 10.0),
        ModeRun(ModeSpec("gkt", 30), numbered([gkt, gkt, record("unparsed")]), 15.0),
    ]


def test_unparsed_and_failed_answers_count_as_wrong_and_are_counted_apart() -> None:
    results = build_results(runs(), PRICES)
    assert list(results) == ["teacher", "student", "gkt@30"]
    student = results["student"]
    assert (student["n"], student["correct"], student["unparsed"], student["failed"]) == (3, 1, 1, 1)
    assert student["accuracy"] == pytest.approx(1 / 3)
    assert results["gkt@30"]["accuracy"] == pytest.approx(2 / 3)
    for row in results.values():
        assert set(RESULT_FIELDS) <= set(row)


def test_ratios_against_the_teacher_and_student_of_the_same_run() -> None:
    results = build_results(runs(), PRICES)
    teacher, student, gkt = results["teacher"], results["student"], results["gkt@30"]
    assert teacher["speedup_vs_teacher"] == 1.0 and teacher["cost_ratio_vs_teacher"] == 1.0
    assert teacher["accuracy_ratio_vs_teacher"] == 1.0
    assert gkt["speedup_vs_teacher"] == pytest.approx(30.0 / 15.0)
    assert student["speedup_vs_teacher"] == pytest.approx(3.0)
    assert gkt["accuracy_ratio_vs_teacher"] == pytest.approx(1.0)
    assert gkt["accuracy_delta_vs_student"] == pytest.approx(1 / 3)
    assert teacher["accuracy_delta_vs_student"] is None  # the teacher row is not one of the student's
    assert gkt["requests_per_second"] == pytest.approx(3 / 15)
    assert gkt["tokens"]["teacher_completion_tokens"] == 60 and gkt["tokens"]["student_completion_tokens"] == 160


def test_cost_uses_the_edge_price_settings() -> None:
    results = build_results(runs(), PRICES)
    teacher, student = PRICES.teacher, PRICES.student
    teacher_cost = 2 * teacher.cost(500, 100) + teacher.cost(500, 0)
    gkt_teacher, gkt_student = 2 * teacher.cost(500, 30), 2 * student.cost(550, 80)
    assert results["teacher"]["cost"] == pytest.approx(teacher_cost)
    assert results["gkt@30"]["cost_by_tier"] == pytest.approx({"teacher": gkt_teacher, "student": gkt_student})
    assert results["gkt@30"]["cost_ratio_vs_teacher"] == pytest.approx((gkt_teacher + gkt_student) / teacher_cost)


def test_cached_prompt_tokens_are_billed_at_the_cached_price_and_both_ways_are_reported() -> None:
    cached = record(
        "correct", teacher_prompt_tokens=1000, teacher_completion_tokens=10, teacher_cached_prompt_tokens=900
    )
    results = build_results([ModeRun(ModeSpec("teacher"), [cached], 5.0)], PRICES)
    row, prices = results["teacher"], PRICES.teacher
    assert prices.cached_prompt_per_1k == pytest.approx(0.1 * prices.prompt_per_1k)  # the default discount
    assert row["cost"] == pytest.approx(
        (100 * prices.prompt_per_1k + 900 * prices.cached_prompt_per_1k + 10 * prices.generation_per_1k) / 1000
    )
    assert row["cost_list_price"] == pytest.approx((1000 * prices.prompt_per_1k + 10 * prices.generation_per_1k) / 1000)
    assert row["cost_list_price_ratio_vs_teacher"] == 1.0


def test_ideal_speedup_comes_from_the_tiers_own_token_rates_of_the_same_run() -> None:
    results = build_results(runs(), PRICES)
    teacher, student, gkt = results["teacher"], results["student"], results["gkt@30"]
    teacher_rate = 200 / 30.0  # teacher-only: 200 generated tokens in 30 s
    student_rate = 110 / 10.0  # student-only: 110 generated tokens in 10 s
    assert teacher["generated_tokens_per_second"] == pytest.approx(teacher_rate)
    ideal = 60 / teacher_rate + 160 / student_rate
    assert gkt["ideal_speedup_vs_teacher"] == pytest.approx(30.0 / ideal)
    assert gkt["achieved_vs_ideal_speedup"] == pytest.approx((30.0 / 15.0) / (30.0 / ideal))
    assert student["ideal_speedup_vs_teacher"] is None and teacher["ideal_speedup_vs_teacher"] is None


def test_teacher_time_is_the_sum_of_the_teachers_own_durations() -> None:
    run = runs()
    for answer in run[0].records:
        answer.timings = {"teacher_total_seconds": 4.0}
    for answer in run[2].records:
        answer.timings = {"teacher_total_seconds": 1.0}
    results = build_results(run, PRICES)
    assert results["teacher"]["teacher_seconds"] == 12.0 and results["gkt@30"]["teacher_seconds"] == 3.0
    assert results["gkt@30"]["teacher_seconds_ratio_vs_teacher"] == pytest.approx(0.25)


def test_several_students_in_one_run_compare_with_their_own_student_only_row() -> None:
    teacher = ModeRun(ModeSpec("teacher"), [record("correct", teacher_completion_tokens=10)], 10.0)
    rows = [teacher]
    for name, correct in (("small", "wrong"), ("big", "correct")):
        rows.append(ModeRun(ModeSpec("student", student=name), [record(correct, student_completion_tokens=10)], 2.0))
        rows.append(ModeRun(ModeSpec("gkt", 5, name), [record("correct", teacher_completion_tokens=5)], 4.0))
    results = build_results(rows, PRICES)
    assert list(results) == ["teacher", "student:small", "gkt@5:small", "student:big", "gkt@5:big"]
    assert results["gkt@5:small"]["accuracy_delta_vs_student"] == 1.0
    assert results["gkt@5:big"]["accuracy_delta_vs_student"] == 0.0
    assert results["gkt@5:big"]["student"] == "big"


def test_missing_baselines_give_no_ratio() -> None:
    results = build_results([runs()[2]], PRICES)
    gkt = results["gkt@30"]
    assert gkt["speedup_vs_teacher"] is None and gkt["cost_ratio_vs_teacher"] is None
    assert gkt["accuracy_delta_vs_student"] is None
    zero = build_results([ModeRun(ModeSpec("teacher"), [record("unparsed")], 1.0)], PRICES)
    assert zero["teacher"]["accuracy_ratio_vs_teacher"] is None  # 0 / 0


def document() -> dict[str, object]:
    return {
        "dataset": "csqa",
        "n": 3,
        "shots": 7,
        "concurrency": 2,
        "max_tokens": 100,
        "models": {"teacher": "T", "students": {"": "S"}},
        "results": build_results(runs(), PRICES),
    }


def test_markdown_tables_have_one_row_per_setting_with_intervals_and_tests() -> None:
    table = markdown_table(document())
    tables = [block for block in table.split("\n\n") if block.startswith("| Setting")]
    assert len(tables) == 3  # accuracy, speed and cost, teacher compute
    for block in tables:
        rows = block.splitlines()[2:]
        assert [row.split(" | ")[0] for row in rows] == ["| Teacher only", "| Student only", "| GKT (K=30)"]
    accuracy_rows = tables[0].splitlines()
    assert accuracy_rows[0].startswith("| Setting | Accuracy [95 % CI] |")
    # GKT: 2/3 right, Wilson [20.8, 93.9]; one question right only in the teacher-only row and none the other way
    # (+0/-0: q2 is wrong in both), so McNemar p = 1; against the student +1/-0.
    assert "| GKT (K=30) | 66.7 % [20.8, 93.9] | +33.3 pp | +0/-0, p=1 | +1/-0, p=1 |" in accuracy_rows[4]
    assert "| 1/3 | 1 | 0 |" in accuracy_rows[3]
    speed_rows = tables[1].splitlines()
    assert speed_rows[4].startswith("| GKT (K=30) | 2.00x [")
    assert "Caches: not recorded" in table
    assert "Teacher: T. student: S." in table


def test_paired_tests_and_agreement_on_the_same_questions() -> None:
    def run(spec: ModeSpec, outcomes: str, extracted: str) -> ModeRun:
        records = [
            record({"1": "correct", "0": "wrong", "u": "unparsed", "f": "failed"}[o], teacher_completion_tokens=1)
            for o in outcomes
        ]
        for r, answer in zip(records, extracted, strict=True):
            r.extracted = None if answer == "-" else answer
        return ModeRun(spec, numbered(records), 1.0)

    teacher = run(ModeSpec("teacher"), "1111111110", "AAAAAAAAAB")
    student = run(ModeSpec("student"), "0000000000", "BBBBBBBBBA")
    gkt = run(ModeSpec("gkt", 5), "111111110u", "AAAAAAAAB-")
    # Questions in another order pair by id, not by position.
    gkt.records.reverse()
    results = build_results([teacher, student, gkt], PRICES)
    row = results["gkt@5"]
    assert row["vs_teacher"] == {"n": 10, "better": 0, "worse": 1, "p_value": 1.0, "significant": False}
    assert row["vs_student"]["better"] == 8 and row["vs_student"]["worse"] == 0
    assert row["vs_student"]["p_value"] == pytest.approx(2 / 2**8) and row["vs_student"]["significant"]
    # Same extracted answer as teacher-only on 8 of 10 (q8: B vs A; q9: unparsed vs B).
    assert row["agreement_with_teacher"]["agree"] == 8 and row["agreement_with_teacher"]["rate"] == 0.8
    assert row["agreement_with_teacher"]["ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert results["student"]["vs_student"] is None and results["teacher"]["vs_teacher"] is None
    assert results["teacher"]["agreement_with_teacher"]["rate"] == 1.0
    assert row["accuracy_ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)  # Wilson 8/10


def test_ratio_intervals_are_paired_bootstraps_over_questions() -> None:
    results = build_results(runs(), PRICES)
    gkt = results["gkt@30"]
    for field in ("cost_ratio_vs_teacher", "cost_list_price_ratio_vs_teacher"):
        low, high = gkt[f"{field}_ci"]
        assert low <= gkt[field] <= high, field
    # Every teacher-only answer took 1 s, every GKT answer 1 s: the latency-sum ratio is 1 in every resample, so
    # the speed-up's interval collapses on the wall-time ratio.
    assert gkt["speedup_vs_teacher_ci"] == pytest.approx([2.0, 2.0])
    assert results["teacher"]["speedup_vs_teacher_ci"] is None


def test_teacher_cpu_gives_the_compute_ratio_and_capacity() -> None:
    run = runs()
    run[0].teacher_cpu_seconds, run[1].teacher_cpu_seconds, run[2].teacher_cpu_seconds = 40.0, 0.5, 10.0
    results = build_results(run, PRICES)
    assert results["gkt@30"]["teacher_cpu_ratio_vs_teacher"] == pytest.approx(0.25)
    assert results["gkt@30"]["teacher_capacity_vs_teacher"] == pytest.approx(4.0)
    assert results["teacher"]["teacher_capacity_vs_teacher"] == pytest.approx(1.0)
    # The student-only row's teacher was idle: its CPU ratio is reported, a capacity would be meaningless.
    assert results["student"]["teacher_cpu_ratio_vs_teacher"] == pytest.approx(0.5 / 40)
    assert results["student"]["teacher_capacity_vs_teacher"] is None
    assert results["gkt@30"]["teacher_generated_tokens_per_answer"] == pytest.approx(20.0)
    assert results["gkt@30"]["teacher_uncached_prompt_tokens_per_answer"] == pytest.approx(1000 / 3)
    unmeasured = build_results(runs(), PRICES)["gkt@30"]
    assert unmeasured["teacher_cpu_ratio_vs_teacher"] is None and unmeasured["teacher_capacity_vs_teacher"] is None


def test_adaptive_policies_are_compared_with_the_best_fixed_k_of_their_student() -> None:
    def gkt(outcomes: list[str], teacher_tokens: int) -> list[AnswerRecord]:
        return [
            record(outcome, teacher_prompt_tokens=500, teacher_completion_tokens=teacher_tokens) for outcome in outcomes
        ]

    adaptive = PolicySpec.parse("a=adaptive:floor=4,window=4")
    runs = [
        ModeRun(ModeSpec("teacher"), gkt(["correct", "correct"], 50), 10.0),
        ModeRun(ModeSpec("gkt", 10), gkt(["correct", "wrong"], 10), 5.0),
        ModeRun(ModeSpec("gkt", 20), gkt(["correct", "correct"], 20), 6.0),
        ModeRun(ModeSpec("gkt", 30), gkt(["correct", "correct"], 30), 7.0),  # as accurate as K=20, more tokens
        ModeRun(ModeSpec("gkt", 30, policy=adaptive), gkt(["correct", "correct"], 12), 5.0),
        ModeRun(ModeSpec("gkt", 30, policy=PolicySpec.parse("b=adaptive:floor=8")), gkt(["correct", "wrong"], 8), 5.0),
    ]
    results = build_results(runs, PRICES)
    met, missed = policy_comparison(results)
    assert (met["setting"], met["best_fixed"], met["goal_met"]) == ("gkt@30/a", "gkt@20", True)
    assert met["teacher_tokens_share_of_best_fixed"] == pytest.approx(24 / 40)
    assert (missed["setting"], missed["goal_met"]) == ("gkt@30/b", False)  # fewer tokens, lower accuracy
    table = policy_table({"results": results})
    assert "| K=20 (100.00 %) | 24 vs 40 | 0.60 |" in table and table.count("| yes |") == 1
    assert policy_table({"results": build_results(runs[:4], PRICES)}) == ""


def test_the_tables_of_a_results_file_can_be_printed_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "csqa.json"
    path.write_text(json.dumps(document()))
    assert main([str(path)]) == 0
    assert markdown_table(document()) in capsys.readouterr().out
    assert main([]) == 2
