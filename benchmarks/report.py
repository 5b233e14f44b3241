"""Turns mode runs into the results JSON, the paper-style Markdown table and the PNG plots."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from benchmarks.runner import (
    FIXED,
    USAGE_FIELDS,
    VERIFICATION_FIELDS,
    AnswerRecord,
    ModeRun,
    ModeSpec,
    PolicySpec,
    record_to_json,
)
from benchmarks.stats import bootstrap_ratio_of_sums, mcnemar_exact, scaled_interval, wilson_interval
from shared.pricing import Prices, TokenPrices

ACCURACY_SPEEDUP_PLOT = "accuracy_speedup_vs_k.png"
COST_ACCURACY_PLOT = "cost_vs_accuracy.png"
TEACHER_TOKENS_PLOT = "accuracy_vs_teacher_tokens.png"
MODE_COLORS = {"teacher": "tab:blue", "student": "tab:orange", "gkt": "tab:green"}
# Every field a mode's entry in `results` has (the tests check them).
RESULT_FIELDS = (
    "mode",
    "guidance_tokens",
    "policy",
    "student",
    "stopped_early",
    "bursts",
    "n",
    "correct",
    "accuracy",
    "unparsed",
    "failed",
    "degraded",
    "wall_seconds",
    "requests_per_second",
    "generated_tokens_per_second",
    "latency_mean_seconds",
    "latency_p50_seconds",
    "latency_p95_seconds",
    "tokens",
    "teacher_seconds",
    "cost",
    "cost_by_tier",
    "cost_list_price",
    "speedup_vs_teacher",
    "ideal_speedup_vs_teacher",
    "achieved_vs_ideal_speedup",
    "teacher_seconds_ratio_vs_teacher",
    "cost_ratio_vs_teacher",
    "cost_list_price_ratio_vs_teacher",
    "accuracy_ratio_vs_teacher",
    "accuracy_delta_vs_student",
    # Uncertainty: 95 % intervals ([low, high]) and paired tests on the same questions.
    "accuracy_ci",
    "vs_teacher",
    "vs_student",
    "agreement_with_teacher",
    "speedup_vs_teacher_ci",
    "teacher_seconds_ratio_vs_teacher_ci",
    "cost_ratio_vs_teacher_ci",
    "cost_list_price_ratio_vs_teacher_ci",
    # The teacher's compute (what a self-hosted teacher pays) and its tokens per answer.
    "teacher_cpu_seconds",
    "edge_cpu_seconds",
    "teacher_cpu_ratio_vs_teacher",
    "teacher_capacity_vs_teacher",
    "teacher_generated_tokens_per_answer",
    "teacher_prompt_tokens_per_answer",
    "teacher_uncached_prompt_tokens_per_answer",
    "teacher_generated_tokens_ratio_vs_teacher",
    "teacher_generated_tokens_ratio_vs_teacher_ci",
    "teacher_time_to_first_token_mean_seconds",
    "restart_seconds",
    # Teacher-verified drafting (the verify policy): its checks summed, and per answer.
    "verification",
    "acceptance_rate",
    "teacher_scored_tokens_per_answer",
    "teacher_passes_per_answer",
)


def _ratio(numerator: float, denominator: float | None) -> float | None:
    return numerator / denominator if denominator else None


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else 0.0


def _costs(records: Sequence[AnswerRecord], prices: Prices) -> tuple[float, float]:
    """(teacher cost, student cost) of the records, each tier's cached prompt tokens at its cached price."""
    teacher = sum(
        prices.teacher.cost(
            r.usage["teacher_prompt_tokens"],
            r.usage["teacher_completion_tokens"],
            r.usage["teacher_cached_prompt_tokens"],
        )
        for r in records
    )
    student = sum(
        prices.student.cost(
            r.usage["student_prompt_tokens"],
            r.usage["student_completion_tokens"],
            r.usage["student_cached_prompt_tokens"],
        )
        for r in records
    )
    return teacher, student


def summarize(run: ModeRun, prices: Prices) -> dict[str, Any]:
    """One mode's numbers; unparsed answers and RPC failures count as wrong (and are counted apart)."""
    records = run.records
    n = len(records)
    outcomes = [r.outcome for r in records]
    tokens = {name: sum(r.usage[name] for r in records) for name in USAGE_FIELDS}
    teacher_cost, student_cost = _costs(records, prices)
    latencies = [r.latency_seconds for r in records if r.outcome != "failed"]
    generated = tokens["teacher_completion_tokens"] + tokens["student_completion_tokens"]
    checks = {name: sum(r.verification.get(name, 0) for r in records) for name in VERIFICATION_FIELDS}
    return {
        "mode": run.spec.mode,
        "guidance_tokens": run.spec.guidance_tokens,
        "policy": run.spec.policy.name if run.spec.mode == "gkt" else None,
        "student": run.spec.student,
        "stopped_early": sum(r.guidance_end == "student_agreed" for r in records),
        "bursts": sum(r.bursts for r in records),
        "n": n,
        "correct": outcomes.count("correct"),
        "accuracy": outcomes.count("correct") / n if n else 0.0,
        "unparsed": outcomes.count("unparsed"),
        "failed": outcomes.count("failed"),
        "degraded": sum(r.degraded for r in records),
        "wall_seconds": run.wall_seconds,
        "requests_per_second": _ratio(n, run.wall_seconds) or 0.0,
        "generated_tokens_per_second": _ratio(generated, run.wall_seconds) or 0.0,
        "latency_mean_seconds": statistics.fmean(latencies) if latencies else 0.0,
        "latency_p50_seconds": _percentile(latencies, 0.5),
        "latency_p95_seconds": _percentile(latencies, 0.95),
        "tokens": tokens,
        # The teacher's own busy time for this mode: the sum of its per-request durations (what a shared cloud
        # teacher spends on these answers, whatever the edge did meanwhile).
        "teacher_seconds": sum(r.timings.get("teacher_total_seconds", 0.0) for r in records),
        "cost": teacher_cost + student_cost,
        "cost_by_tier": {"teacher": teacher_cost, "student": student_cost},
        "cost_list_price": sum(_costs(records, prices.without_cache_discount())),
        "accuracy_ci": list(wilson_interval(outcomes.count("correct"), n)),
        "teacher_cpu_seconds": run.teacher_cpu_seconds,
        "edge_cpu_seconds": run.edge_cpu_seconds,
        "teacher_generated_tokens_per_answer": _ratio(tokens["teacher_completion_tokens"], n),
        "teacher_prompt_tokens_per_answer": _ratio(tokens["teacher_prompt_tokens"], n),
        "teacher_uncached_prompt_tokens_per_answer": _ratio(
            tokens["teacher_prompt_tokens"] - tokens["teacher_cached_prompt_tokens"], n
        ),
        "teacher_time_to_first_token_mean_seconds": _mean_teacher_ttft(records),
        "restart_seconds": run.restart_seconds,
        "verification": checks,
        "acceptance_rate": _ratio(checks["accepted_tokens"], checks["draft_tokens"] or None),
        "teacher_scored_tokens_per_answer": _ratio(checks["teacher_scored_tokens"], n),
        "teacher_passes_per_answer": _ratio(checks["teacher_passes"], n),
    }


def _mean_teacher_ttft(records: Sequence[AnswerRecord]) -> float | None:
    """The teacher's own time to its first token, averaged over the answers it wrote tokens for."""
    values = [
        r.timings.get("teacher_time_to_first_token_seconds", 0.0)
        for r in records
        if r.usage["teacher_completion_tokens"] > 0
    ]
    return statistics.fmean(values) if values else None


def ideal_seconds(row: dict[str, Any], teacher_rate: float, student_rate: float) -> float | None:
    """A GKT mode's time if each tier wrote its tokens at its own measured rate, one after the other: the
    teacher's K tokens at the teacher-only rate, then the student's at the student-only rate (tokens/s)."""
    if not teacher_rate or not student_rate:
        return None
    tokens = row["tokens"]
    return float(
        tokens["teacher_completion_tokens"] / teacher_rate + tokens["student_completion_tokens"] / student_rate
    )


def paired_answers(row: ModeRun, baseline: ModeRun) -> list[tuple[AnswerRecord, AnswerRecord]]:
    """The two runs' answers to the same questions, matched by question id (both runs normally ask the same)."""
    by_id = {r.example_id: r for r in baseline.records}
    return [(r, by_id[r.example_id]) for r in row.records if r.example_id in by_id]


def paired_test(row: ModeRun, baseline: ModeRun) -> dict[str, Any]:
    """The exact McNemar test of `row` against `baseline` on the same questions: `better` (right here only),
    `worse` (right in the baseline only), the two-sided p-value, and `significant` at 5 %."""
    pairs = paired_answers(row, baseline)
    better = sum(a.outcome == "correct" and b.outcome != "correct" for a, b in pairs)
    worse = sum(a.outcome != "correct" and b.outcome == "correct" for a, b in pairs)
    p_value = mcnemar_exact(better, worse)
    return {"n": len(pairs), "better": better, "worse": worse, "p_value": p_value, "significant": p_value < 0.05}


def same_answer(a: AnswerRecord, b: AnswerRecord) -> bool:
    """Two answers state the same extracted answer. An unparsed answer or an RPC failure never agrees (two answers
    that both fail to state one have not agreed on anything)."""
    return a.extracted is not None and a.extracted == b.extracted


def agreement(row: ModeRun, teacher: ModeRun) -> dict[str, Any]:
    """How often this row states the answer teacher-only stated on the same question (`same_answer`), with its
    Wilson interval."""
    pairs = paired_answers(row, teacher)
    same = sum(same_answer(a, b) for a, b in pairs)
    rate = same / len(pairs) if pairs else None
    return {"agree": same, "n": len(pairs), "rate": rate, "ci": list(wilson_interval(same, len(pairs)))}


def _teacher_seconds(record: AnswerRecord) -> float:
    return record.timings.get("teacher_total_seconds", 0.0)


def _cost_of(prices: Prices) -> Any:
    return lambda record: sum(_costs([record], prices))


def _ratio_interval(row: ModeRun, baseline: ModeRun, value: Any) -> list[float] | None:
    """The paired bootstrap interval of sum(value over this row) / sum(value over the baseline), by question."""
    pairs = paired_answers(row, baseline)
    interval = bootstrap_ratio_of_sums([value(a) for a, _ in pairs], [value(b) for _, b in pairs])
    return list(interval) if interval else None


def _speedup_interval(row: ModeRun, teacher: ModeRun, speedup: float | None) -> list[float] | None:
    """A concurrent run has one wall time, not one per question: the speed-up's interval is borrowed from the ratio
    of per-question latency sums (teacher-only's over this row's), bootstrapped by question, relative to its own
    value (`stats.scaled_interval`)."""
    pairs = paired_answers(row, teacher)
    slow, fast = [b.latency_seconds for _, b in pairs], [a.latency_seconds for a, _ in pairs]
    proxy = _ratio(sum(slow), sum(fast))
    interval = scaled_interval(speedup, proxy, bootstrap_ratio_of_sums(slow, fast))
    return list(interval) if interval else None


def add_comparisons(results: dict[str, dict[str, Any]], runs: Sequence[ModeRun], prices: Prices) -> None:
    """Ratios against the teacher-only row and the same student's student-only row of the same run (None where a
    baseline is missing or zero), the ideal GKT speed-up from the two baselines' token rates, and the uncertainty of
    each: paired McNemar tests of accuracy, answer agreement with teacher-only, bootstrap intervals of ratios."""
    by_key = {run.spec.key: run for run in runs}
    teacher = results.get("teacher")
    teacher_run = by_key.get("teacher")
    students = {row["student"]: row for row in results.values() if row["mode"] == "student"}
    student_runs = {run.spec.student: run for run in runs if run.spec.mode == "student"}
    for key, row in results.items():
        run = by_key[key]
        student = students.get(row["student"])
        row["speedup_vs_teacher"] = _ratio(teacher["wall_seconds"], row["wall_seconds"]) if teacher else None
        row["teacher_seconds_ratio_vs_teacher"] = (
            _ratio(row["teacher_seconds"], teacher["teacher_seconds"]) if teacher else None
        )
        row["cost_ratio_vs_teacher"] = _ratio(row["cost"], teacher["cost"]) if teacher else None
        row["cost_list_price_ratio_vs_teacher"] = (
            _ratio(row["cost_list_price"], teacher["cost_list_price"]) if teacher else None
        )
        row["accuracy_ratio_vs_teacher"] = _ratio(row["accuracy"], teacher["accuracy"]) if teacher else None
        row["accuracy_delta_vs_student"] = (
            row["accuracy"] - student["accuracy"] if student and row["mode"] != "teacher" else None
        )
        row["ideal_speedup_vs_teacher"] = row["achieved_vs_ideal_speedup"] = None
        if row["mode"] == "gkt" and teacher and student:
            ideal = ideal_seconds(row, teacher["generated_tokens_per_second"], student["generated_tokens_per_second"])
            row["ideal_speedup_vs_teacher"] = _ratio(teacher["wall_seconds"], ideal)
            if row["ideal_speedup_vs_teacher"] and row["speedup_vs_teacher"]:
                row["achieved_vs_ideal_speedup"] = row["speedup_vs_teacher"] / row["ideal_speedup_vs_teacher"]
        # The self-hosted teacher's compute: CPU seconds against teacher-only's, and its inverse, how many times
        # the edge users one teacher serves at the same load.
        row["teacher_cpu_ratio_vs_teacher"] = (
            _ratio(row["teacher_cpu_seconds"], teacher["teacher_cpu_seconds"])
            if teacher and row["teacher_cpu_seconds"] is not None and teacher["teacher_cpu_seconds"] is not None
            else None
        )
        # Only for rows that use the teacher: a student-only row's idle teacher would give a meaningless ratio.
        row["teacher_capacity_vs_teacher"] = (
            _ratio(1.0, row["teacher_cpu_ratio_vs_teacher"])
            if row["teacher_cpu_ratio_vs_teacher"] and row["mode"] != "student"
            else None
        )
        row["teacher_generated_tokens_ratio_vs_teacher"] = (
            _ratio(row["tokens"]["teacher_completion_tokens"], teacher["tokens"]["teacher_completion_tokens"])
            if teacher
            else None
        )
        row["vs_teacher"] = row["agreement_with_teacher"] = None
        row["speedup_vs_teacher_ci"] = row["teacher_seconds_ratio_vs_teacher_ci"] = None
        row["cost_ratio_vs_teacher_ci"] = row["cost_list_price_ratio_vs_teacher_ci"] = None
        row["teacher_generated_tokens_ratio_vs_teacher_ci"] = None
        if teacher_run is not None:
            if run is not teacher_run:
                row["vs_teacher"] = paired_test(run, teacher_run)
                row["speedup_vs_teacher_ci"] = _speedup_interval(run, teacher_run, row["speedup_vs_teacher"])
                row["teacher_seconds_ratio_vs_teacher_ci"] = _ratio_interval(run, teacher_run, _teacher_seconds)
                row["cost_ratio_vs_teacher_ci"] = _ratio_interval(run, teacher_run, _cost_of(prices))
                row["cost_list_price_ratio_vs_teacher_ci"] = _ratio_interval(
                    run, teacher_run, _cost_of(prices.without_cache_discount())
                )
                row["teacher_generated_tokens_ratio_vs_teacher_ci"] = _ratio_interval(
                    run, teacher_run, lambda r: r.usage["teacher_completion_tokens"]
                )
            row["agreement_with_teacher"] = agreement(run, teacher_run)
        student_run = student_runs.get(row["student"])
        row["vs_student"] = paired_test(run, student_run) if row["mode"] == "gkt" and student_run is not None else None


def build_results(runs: Sequence[ModeRun], prices: Prices) -> dict[str, dict[str, Any]]:
    """`results` of the JSON: one entry per mode ("teacher", "student", "gkt@K", with ":<student>" when a run
    compares several students), in run order."""
    results = {run.spec.key: summarize(run, prices) for run in runs}
    add_comparisons(results, runs, prices)
    return results


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_answers(path: Path, runs: Sequence[ModeRun]) -> None:
    """Every answer of every mode, one JSON object a line (to audit the extraction)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for run in runs:
            for record in run.records:
                out.write(json.dumps(record_to_json(record, run.spec)) + "\n")


def _label(row: dict[str, Any]) -> str:
    policy = f", {row['policy']}" if row.get("policy") not in (None, "fixed") else ""
    gkt = f"GKT (K={row['guidance_tokens']}{policy})"
    base = {"teacher": "Teacher only", "student": "Student only"}.get(row["mode"], gkt)
    return f"{base}, {row['student']}" if row["student"] else base


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def _interval(values: Sequence[float] | None, spec: str, scale: float = 1.0) -> str:
    return "" if not values else f" [{format(scale * values[0], spec)}, {format(scale * values[1], spec)}]"


def _test(comparison: dict[str, Any] | None) -> str:
    """`+b/-c, p=0.04*`: right here only / right in the baseline only, the exact McNemar p (* below 0.05)."""
    if not comparison:
        return "–"
    mark = "*" if comparison["significant"] else ""
    return f"+{comparison['better']}/-{comparison['worse']}, p={comparison['p_value']:.3g}{mark}"


def _per_answer(value: float | None) -> str:
    return _number(value, ".1f")


def markdown_table(document: dict[str, Any]) -> str:
    """The paper's tables for one dataset, with their uncertainty: accuracy (Wilson intervals, paired tests against
    teacher-only and the same student alone, agreement with teacher-only's answers); speed and cost ratios to
    teacher-only (paired bootstrap intervals); the teacher's compute and tokens per answer."""
    rows = list(document["results"].values())
    accuracy = [
        "| Setting | Accuracy [95 % CI] | Δ vs student | vs teacher-only (+/-, p) | vs student-only (+/-, p) "
        "| Same answer as teacher-only [95 % CI] | Unparsed | Failed | Degraded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    speed = [
        "| Setting | Speed-up [95 % CI] | Ideal speed-up | Achieved / ideal | Teacher latency sum / teacher [95 % CI] "
        "| Cost / teacher, hosted (cache discount) [95 % CI] | Cost / teacher, hosted (list price) [95 % CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    compute = [
        "| Setting | Teacher CPU s | Teacher CPU / teacher | Teacher capacity | Teacher gen. tokens / answer "
        "| Teacher gen. tokens / teacher [95 % CI] | Teacher prompt tokens / answer (uncached) "
        "| Teacher first token (mean s) | Edge CPU s | Restart s (untimed) | Teacher tokens (prompt, cached, gen) "
        "| Student tokens (prompt, cached, gen) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["tokens"]
        delta = row["accuracy_delta_vs_student"]
        agreement = row.get("agreement_with_teacher")
        agrees = (
            "–"
            if not agreement or agreement["rate"] is None
            else f"{100 * agreement['rate']:.1f} %{_interval(agreement['ci'], '.1f', 100)}"
        )
        accuracy.append(
            f"| {_label(row)} | {100 * row['accuracy']:.1f} %{_interval(row.get('accuracy_ci'), '.1f', 100)} | "
            f"{'–' if delta is None else f'{100 * delta:+.1f} pp'} | {_test(row.get('vs_teacher'))} | "
            f"{_test(row.get('vs_student'))} | {agrees} | {row['unparsed']}/{row['n']} | {row['failed']} | "
            f"{row['degraded']} |"
        )
        speed.append(
            f"| {_label(row)} | {_number(row['speedup_vs_teacher'], '.2f', 'x')}"
            f"{_interval(row.get('speedup_vs_teacher_ci'), '.2f')} | "
            f"{_number(row['ideal_speedup_vs_teacher'], '.2f', 'x')} | "
            f"{_number(row['achieved_vs_ideal_speedup'], '.2f')} | "
            f"{_number(row['teacher_seconds_ratio_vs_teacher'], '.2f')}"
            f"{_interval(row.get('teacher_seconds_ratio_vs_teacher_ci'), '.2f')} | "
            f"{_number(row['cost_ratio_vs_teacher'], '.3f')}{_interval(row.get('cost_ratio_vs_teacher_ci'), '.3f')} | "
            f"{_number(row['cost_list_price_ratio_vs_teacher'], '.3f')}"
            f"{_interval(row.get('cost_list_price_ratio_vs_teacher_ci'), '.3f')} |"
        )
        compute.append(
            f"| {_label(row)} | {_number(row.get('teacher_cpu_seconds'), '.1f')} | "
            f"{_number(row.get('teacher_cpu_ratio_vs_teacher'), '.2f')} | "
            f"{_number(row.get('teacher_capacity_vs_teacher'), '.2f', 'x')} | "
            f"{_per_answer(row.get('teacher_generated_tokens_per_answer'))} | "
            f"{_number(row.get('teacher_generated_tokens_ratio_vs_teacher'), '.2f')}"
            f"{_interval(row.get('teacher_generated_tokens_ratio_vs_teacher_ci'), '.2f')} | "
            f"{_per_answer(row.get('teacher_prompt_tokens_per_answer'))} "
            f"({_per_answer(row.get('teacher_uncached_prompt_tokens_per_answer'))}) | "
            f"{_number(row.get('teacher_time_to_first_token_mean_seconds'), '.2f')} | "
            f"{_number(row.get('edge_cpu_seconds'), '.1f')} | {_number(row.get('restart_seconds'), '.1f')} | "
            f"{t['teacher_prompt_tokens']}, {t['teacher_cached_prompt_tokens']}, {t['teacher_completion_tokens']} | "
            f"{t['student_prompt_tokens']}, {t['student_cached_prompt_tokens']}, {t['student_completion_tokens']} |"
        )
    meta = document
    students = "; ".join(f"{key or 'student'}: {text}" for key, text in meta["models"]["students"].items())
    workload = meta.get("workload", "fewshot")
    shots = f"{meta['shots']}-shot" if workload == "fewshot" else "chat, zero-shot"
    caches = meta.get("cache_control")
    notes = [
        f"{meta['dataset']}, n={meta['n']}, {shots}, concurrency {meta['concurrency']}, max_tokens "
        f"{meta['max_tokens']}. Teacher: {meta['models']['teacher']}. {students}.",
        "Caches: "
        + (caches["note"] if caches else "not recorded (a run from before fair caches: do not trust its speed-ups)")
        + ".",
        "Intervals: accuracy and agreement, Wilson 95 %; ratios, paired bootstrap over questions (95 %, 2,000 "
        "resamples, seed 0; the speed-up's from per-question latency sums). +/-: questions right only here / only in "
        "the baseline, exact McNemar p (* p < 0.05). Teacher latency sum: the teacher's per-request times added up "
        "(overlapping under batching: latency, not cost). Teacher capacity: teacher-only's teacher CPU seconds / "
        "this row's (edge users one self-hosted teacher serves at the same load, relative to teacher-only).",
    ]
    return "\n\n".join(["\n".join(accuracy), "\n".join(speed), "\n".join(compute), "\n".join(notes)]) + "\n"


# Issue 15's goal for an adaptive policy: the best fixed K's accuracy with at most this share of its teacher tokens.
ADAPTIVE_TOKEN_GOAL = 0.6


def best_fixed(results: dict[str, dict[str, Any]], student: str | None) -> tuple[str, dict[str, Any]] | None:
    """The fixed-K GKT row of this student with the highest accuracy (ties: the fewest teacher generated tokens)."""
    fixed = [
        (key, row)
        for key, row in results.items()
        if row["mode"] == "gkt" and row.get("policy") in (None, "fixed") and row["student"] == student
    ]
    return max(
        fixed, key=lambda item: (item[1]["accuracy"], -item[1]["tokens"]["teacher_completion_tokens"]), default=None
    )


def policy_comparison(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each non-fixed policy's row against the best fixed K of the same student: accuracy, teacher generated
    tokens and whether it meets the goal (at least that accuracy with at most 60 % of its teacher tokens)."""
    comparison = []
    for key, row in results.items():
        if row["mode"] != "gkt" or row.get("policy") in (None, "fixed"):
            continue
        best = best_fixed(results, row["student"])
        if best is None:
            continue
        best_key, best_row = best
        tokens = row["tokens"]["teacher_completion_tokens"]
        best_tokens = best_row["tokens"]["teacher_completion_tokens"]
        share = _ratio(tokens, best_tokens)
        comparison.append(
            {
                "setting": key,
                "best_fixed": best_key,
                "accuracy": row["accuracy"],
                "best_fixed_accuracy": best_row["accuracy"],
                "teacher_generated_tokens": tokens,
                "best_fixed_teacher_generated_tokens": best_tokens,
                "teacher_tokens_share_of_best_fixed": share,
                "goal_met": share is not None
                and row["accuracy"] >= best_row["accuracy"]
                and share <= ADAPTIVE_TOKEN_GOAL,
            }
        )
    return comparison


def policy_table(document: dict[str, Any]) -> str:
    """Adaptive policies against the best fixed K (empty when the run had none)."""
    comparison = policy_comparison(document["results"])
    if not comparison:
        return ""
    results = document["results"]
    lines = [
        "| Setting | Accuracy | Best fixed K (accuracy) | Teacher generated tokens | Share of best fixed K's "
        "| Stopped early | Bursts | Speed-up | Cost / teacher | Goal met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in comparison:
        row, best = results[entry["setting"]], results[entry["best_fixed"]]
        lines.append(
            f"| {_label(row)} | {100 * entry['accuracy']:.2f} % | "
            f"K={best['guidance_tokens']} ({100 * entry['best_fixed_accuracy']:.2f} %) | "
            f"{entry['teacher_generated_tokens']} vs {entry['best_fixed_teacher_generated_tokens']} | "
            f"{_number(entry['teacher_tokens_share_of_best_fixed'], '.2f')} | "
            f"{row['stopped_early']}/{row['n']} | {row['bursts']} | {_number(row['speedup_vs_teacher'], '.2f', 'x')} | "
            f"{_number(row['cost_ratio_vs_teacher'], '.3f')} | {'yes' if entry['goal_met'] else 'no'} |"
        )
    lines.append(
        f"\nGoal: at least the best fixed K's accuracy with at most {ADAPTIVE_TOKEN_GOAL:.0%} of its teacher "
        "generated tokens."
    )
    return "\n".join(lines) + "\n"


def verification_table(document: dict[str, Any]) -> str:
    """Rows that verified drafts (the verify policy): acceptance, the teacher's scoring and decoding per answer, and
    agreement with teacher-only's answers (empty when the run had none)."""
    rows = [row for row in document["results"].values() if row.get("verification", {}).get("rounds")]
    if not rows:
        return ""
    lines = [
        "| Setting | Accuracy | Agreement with teacher-only | Acceptance rate | Teacher scored tokens / answer "
        "| Teacher passes / answer | Teacher generated tokens / answer | Speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        agreement = row.get("agreement_with_teacher")
        agrees = "–" if not agreement or agreement["rate"] is None else f"{100 * agreement['rate']:.1f} %"
        lines.append(
            f"| {_label(row)} | {100 * row['accuracy']:.2f} % | {agrees} | {_number(row['acceptance_rate'], '.2f')} | "
            f"{_number(row['teacher_scored_tokens_per_answer'], '.1f')} | "
            f"{_number(row['teacher_passes_per_answer'], '.1f')} | "
            f"{_number(row['teacher_generated_tokens_per_answer'], '.1f')} | "
            f"{_number(row['speedup_vs_teacher'], '.2f', 'x')} |"
        )
    return "\n".join(lines) + "\n"


def _title(document: dict[str, Any]) -> str:
    return f"{document['dataset']} (n={document['n']}, concurrency {document['concurrency']})"


def _accuracy_top(values: Sequence[float]) -> float:
    """Room above the best accuracy (in %), at most 100."""
    return min(100.0, max(10.0, 1.2 * max(values, default=0.0)))


def _accuracy_extent(results: dict[str, dict[str, Any]]) -> list[float]:
    """Every accuracy and the top of its interval (in %): what the accuracy axis must show."""
    return [100 * (row.get("accuracy_ci") or [0.0, row["accuracy"]])[1] for row in results.values()] + [
        100 * row["accuracy"] for row in results.values()
    ]


STUDENT_COLORS = ("tab:green", "tab:purple", "tab:red", "tab:brown")


def plot_accuracy_speedup(document: dict[str, Any], path: Path) -> None:
    """Accuracy and speed-up against K, one line per student; teacher-only and each student alone as horizontal
    lines (the student's in its own colour)."""
    results = document["results"]
    students = list(dict.fromkeys(row["student"] for row in results.values() if row["mode"] != "teacher"))
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    accuracy_axes, speedup_axes = figure.subplots(1, 2)
    all_ks: set[int] = set()
    for axes, field, scale, ylabel in (
        (accuracy_axes, "accuracy", 100.0, "accuracy (%), 95 % Wilson interval"),
        (speedup_axes, "speedup_vs_teacher", 1.0, "speed-up vs teacher-only (x), 95 % bootstrap"),
    ):
        for color, student in zip(STUDENT_COLORS * 4, students, strict=False):
            label = "GKT" + (f" → {student}" if student else "")
            gkt = sorted(
                (
                    r
                    for r in results.values()
                    if r["mode"] == "gkt" and r["student"] == student and r.get("policy") in (None, "fixed")
                ),
                key=lambda r: r["guidance_tokens"],
            )
            ks = [r["guidance_tokens"] for r in gkt]
            all_ks.update(ks)
            values = [r[field] for r in gkt]
            if ks and all(v is not None for v in values):
                axes.errorbar(
                    ks,
                    [scale * v for v in values],
                    yerr=_error_bars([r.get(f"{field}_ci") for r in gkt], values, scale),
                    marker="o",
                    color=color,
                    capsize=3,
                    label=label,
                )
            alone = next((r for r in results.values() if r["mode"] == "student" and r["student"] == student), None)
            if alone is not None and alone[field] is not None:
                axes.axhline(scale * alone[field], linestyle=":", color=color, label=f"{student or 'student'} only")
                _band(axes, alone.get(f"{field}_ci"), scale, color)
        if "teacher" in results and results["teacher"][field] is not None:
            axes.axhline(
                scale * results["teacher"][field], linestyle="--", color=MODE_COLORS["teacher"], label="teacher only"
            )
            _band(axes, results["teacher"].get(f"{field}_ci"), scale, MODE_COLORS["teacher"])
        axes.set_xlabel("guidance tokens K")
        axes.set_ylabel(ylabel)
        if all_ks:
            axes.set_xticks(sorted(all_ks))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    accuracy_axes.set_ylim(0, _accuracy_top(_accuracy_extent(results)))
    speedup_axes.set_ylim(bottom=0)
    figure.suptitle(f"GKT: accuracy and speed-up against K, {_title(document)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def _error_bars(intervals: Sequence[Sequence[float] | None], values: Sequence[float], scale: float) -> Any:
    """Matplotlib's `yerr` (distances below and above each value) from [low, high] intervals; 0 where none."""
    below = [scale * (v - ci[0]) if ci else 0.0 for v, ci in zip(values, intervals, strict=True)]
    above = [scale * (ci[1] - v) if ci else 0.0 for v, ci in zip(values, intervals, strict=True)]
    return [[max(0.0, b) for b in below], [max(0.0, a) for a in above]]


def _band(axes: Any, interval: Sequence[float] | None, scale: float, color: str) -> None:
    """A baseline's interval as a faint horizontal band behind its line."""
    if interval:
        axes.axhspan(scale * interval[0], scale * interval[1], color=color, alpha=0.08, linewidth=0)


def plot_cost_accuracy(document: dict[str, Any], path: Path) -> None:
    """Cost against accuracy for every mode."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    markers = {"teacher": "s", "student": "^", "gkt": "o"}
    results = document["results"]
    students = list(dict.fromkeys(row["student"] for row in results.values() if row["mode"] != "teacher"))
    colors = dict(zip(students, STUDENT_COLORS * 4, strict=False))
    for row in results.values():
        color = MODE_COLORS["teacher"] if row["mode"] == "teacher" else colors[row["student"]]
        if row["mode"] == "gkt":
            axes.annotate(f"K={row['guidance_tokens']}", (row["cost"], 100 * row["accuracy"]), fontsize="x-small")
        axes.errorbar(
            row["cost"],
            100 * row["accuracy"],
            yerr=_error_bars([row.get("accuracy_ci")], [row["accuracy"]], 100.0),
            color=color,
            marker=markers[row["mode"]],
            markersize=7,
            linestyle="none",
            capsize=3,
            label=_label(row).replace(f" (K={row['guidance_tokens']})", "") if row["mode"] == "gkt" else _label(row),
            clip_on=False,
        )
    axes.set_xlabel(f"cost of the {document['n']} questions (edge price settings)")
    axes.set_ylabel("accuracy (%), 95 % Wilson interval")
    axes.set_ylim(0, _accuracy_top(_accuracy_extent(results)))
    axes.set_xlim(0, 1.1 * max((row["cost"] for row in results.values()), default=0.0) or 1.0)
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))  # one legend entry per student's GKT points
    axes.legend(unique.values(), unique.keys(), loc="best", fontsize="small")
    figure.suptitle(f"Cost against accuracy, {_title(document)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def plot_accuracy_teacher_tokens(document: dict[str, Any], path: Path) -> None:
    """Accuracy against the teacher's generated tokens (what GKT pays the teacher for): fixed K as a line per
    student, each other policy as its own markers, teacher-only and student-only as reference points. The upper-left
    points form the Pareto front."""
    results = document["results"]
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    students = list(dict.fromkeys(row["student"] for row in results.values() if row["mode"] != "teacher"))
    colors = dict(zip(students, STUDENT_COLORS * 4, strict=False))
    markers = iter(("D", "P", "X", "v", "*", "h") * 4)
    policy_markers: dict[str, str] = {}
    for row in results.values():
        tokens = row["tokens"]["teacher_completion_tokens"]
        point = (tokens, 100 * row["accuracy"])
        color = MODE_COLORS["teacher"] if row["mode"] == "teacher" else colors[row["student"]]
        axes.errorbar(
            *point,
            yerr=_error_bars([row.get("accuracy_ci")], [row["accuracy"]], 100.0),
            color=color,
            linestyle="none",
            capsize=3,
            alpha=0.6,
        )
        if row["mode"] == "teacher":
            axes.scatter(*point, color=MODE_COLORS["teacher"], marker="s", s=70, label="teacher only")
        elif row["mode"] == "student":
            axes.scatter(*point, color=colors[row["student"]], marker="^", s=60, label=_label(row))
        elif row.get("policy") not in (None, "fixed"):
            marker = policy_markers.setdefault(row["policy"], next(markers))
            axes.scatter(
                *point,
                color=colors[row["student"]],
                marker=marker,
                s=70,
                label=_label(row).split(" (")[0]
                + f" ({row['policy']})"
                + (f", {row['student']}" if row["student"] else ""),
            )
            axes.annotate(f"K≤{row['guidance_tokens']}", point, fontsize="x-small")
    for student in students:
        fixed = sorted(
            (
                r
                for r in results.values()
                if r["mode"] == "gkt" and r["student"] == student and r.get("policy") in (None, "fixed")
            ),
            key=lambda r: r["guidance_tokens"],
        )
        if fixed:
            xs = [r["tokens"]["teacher_completion_tokens"] for r in fixed]
            ys = [100 * r["accuracy"] for r in fixed]
            axes.plot(
                xs, ys, marker="o", color=colors[student], label="GKT fixed K" + (f", {student}" if student else "")
            )
            for r, x, y in zip(fixed, xs, ys, strict=True):
                axes.annotate(f"K={r['guidance_tokens']}", (x, y), fontsize="x-small")
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    axes.legend(unique.values(), unique.keys(), loc="best", fontsize="small")
    axes.set_xlabel(f"teacher generated tokens, all {document['n']} questions")
    axes.set_ylabel("accuracy (%), 95 % Wilson interval")
    axes.set_xlim(left=0)
    axes.set_ylim(0, _accuracy_top(_accuracy_extent(results)))
    axes.grid(alpha=0.3)
    figure.suptitle(f"Accuracy against teacher tokens, {_title(document)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def write_plots(document: dict[str, Any], directory: Path, prefix: str) -> list[Path]:
    """The three plots in `directory`: `<prefix>_` + the accuracy/speed-up, cost/accuracy and teacher-tokens names."""
    accuracy_speedup = directory / f"{prefix}_{ACCURACY_SPEEDUP_PLOT}"
    cost_accuracy = directory / f"{prefix}_{COST_ACCURACY_PLOT}"
    teacher_tokens = directory / f"{prefix}_{TEACHER_TOKENS_PLOT}"
    plot_accuracy_speedup(document, accuracy_speedup)
    plot_cost_accuracy(document, cost_accuracy)
    plot_accuracy_teacher_tokens(document, teacher_tokens)
    return [accuracy_speedup, cost_accuracy, teacher_tokens]


def runs_of(document: dict[str, Any], answers: Path) -> list[ModeRun]:
    """The mode runs behind a results document, from its rows' measurements and its answers file."""
    by_mode: dict[str, list[AnswerRecord]] = {}
    known = {f.name for f in fields(AnswerRecord)}
    for line in answers.read_text(encoding="utf-8").splitlines():
        answer = json.loads(line)
        by_mode.setdefault(answer["mode"], []).append(AnswerRecord(**{k: v for k, v in answer.items() if k in known}))
    runs = []
    for key, row in document["results"].items():
        policy = PolicySpec(row.get("policy") or "fixed", FIXED.policy)
        spec = ModeSpec(row["mode"], row["guidance_tokens"], row["student"], policy)
        run = ModeRun(spec, by_mode.get(key, []), row["wall_seconds"])
        run.teacher_cpu_seconds, run.edge_cpu_seconds = row.get("teacher_cpu_seconds"), row.get("edge_cpu_seconds")
        run.restart_seconds = row.get("restart_seconds") or 0.0
        runs.append(run)
    return runs


def with_statistics(document: dict[str, Any], answers: Path | None) -> dict[str, Any]:
    """A results document from before the intervals and paired tests (no `accuracy_ci`) with them recomputed from
    its answers file; other documents as they are."""
    rows = list(document["results"].values())
    if not rows or "accuracy_ci" in rows[0] or answers is None or not answers.is_file():
        return document
    tiers = {tier: TokenPrices(**document["prices_per_1k_tokens"][tier]) for tier in ("teacher", "student")}
    results = build_results(runs_of(document, answers), Prices(**tiers))
    return {**document, "results": results}


def main(argv: Sequence[str]) -> int:
    """`python -m benchmarks.report RESULTS.json...`: print each results file's tables again (the intervals and
    paired tests of an older file recomputed from its answers file)."""
    if not argv:
        sys.stderr.write("usage: python -m benchmarks.report RESULTS.json [RESULTS.json ...]\n")
        return 2
    for name in argv:
        path = Path(name)
        document = json.loads(path.read_text(encoding="utf-8"))
        document = with_statistics(document, path.with_suffix(".answers.jsonl"))
        sys.stdout.write(
            f"\n{name}\n\n" + markdown_table(document) + "\n" + policy_table(document) + verification_table(document)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
