"""Turns mode runs into the results JSON, the paper-style Markdown table and the PNG plots."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from benchmarks.runner import USAGE_FIELDS, ModeRun, record_to_json
from shared.metrics import Prices

ACCURACY_SPEEDUP_PLOT = "accuracy_speedup_vs_k.png"
COST_ACCURACY_PLOT = "cost_vs_accuracy.png"
MODE_COLORS = {"teacher": "tab:blue", "student": "tab:orange", "gkt": "tab:green"}
# Every field a mode's entry in `results` has (the tests check them).
RESULT_FIELDS = (
    "mode",
    "guidance_tokens",
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
    "cost",
    "cost_by_tier",
    "speedup_vs_teacher",
    "cost_ratio_vs_teacher",
    "accuracy_ratio_vs_teacher",
    "accuracy_delta_vs_student",
)


def _ratio(numerator: float, denominator: float | None) -> float | None:
    return numerator / denominator if denominator else None


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else 0.0


def summarize(run: ModeRun, prices: Prices) -> dict[str, Any]:
    """One mode's numbers; unparsed answers and RPC failures count as wrong (and are counted apart)."""
    records = run.records
    n = len(records)
    outcomes = [r.outcome for r in records]
    tokens = {name: sum(r.usage[name] for r in records) for name in USAGE_FIELDS}
    teacher_cost = sum(
        prices.teacher_cost(r.usage["teacher_prompt_tokens"], r.usage["teacher_completion_tokens"]) for r in records
    )
    student_cost = sum(
        prices.student_cost(r.usage["student_prompt_tokens"], r.usage["student_completion_tokens"]) for r in records
    )
    latencies = [r.latency_seconds for r in records if r.outcome != "failed"]
    generated = tokens["teacher_completion_tokens"] + tokens["student_completion_tokens"]
    return {
        "mode": run.spec.mode,
        "guidance_tokens": run.spec.guidance_tokens,
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
        "cost": teacher_cost + student_cost,
        "cost_by_tier": {"teacher": teacher_cost, "student": student_cost},
    }


def add_comparisons(results: dict[str, dict[str, Any]]) -> None:
    """Ratios against the teacher-only and student-only rows of the same run (None where a baseline is missing
    or zero)."""
    teacher, student = results.get("teacher"), results.get("student")
    for row in results.values():
        row["speedup_vs_teacher"] = _ratio(teacher["wall_seconds"], row["wall_seconds"]) if teacher else None
        row["cost_ratio_vs_teacher"] = _ratio(row["cost"], teacher["cost"]) if teacher else None
        row["accuracy_ratio_vs_teacher"] = _ratio(row["accuracy"], teacher["accuracy"]) if teacher else None
        row["accuracy_delta_vs_student"] = row["accuracy"] - student["accuracy"] if student else None


def build_results(runs: Sequence[ModeRun], prices: Prices) -> dict[str, dict[str, Any]]:
    """`results` of the JSON: one entry per mode ("teacher", "student", "gkt@K"), in run order."""
    results = {run.spec.key: summarize(run, prices) for run in runs}
    add_comparisons(results)
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


def _label(key: str, row: dict[str, Any]) -> str:
    return {"teacher": "Teacher only", "student": "Student only"}.get(key, f"GKT (K={row['guidance_tokens']})")


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown_table(document: dict[str, Any]) -> str:
    """The paper's table for one dataset: accuracy and speed-up per setting, plus cost, failures and throughput."""
    lines = [
        "| Setting | Accuracy | Δ vs student | Acc. / teacher | Speed-up | Cost | Cost / teacher "
        "| Unparsed | Failed | Degraded | req/s | Teacher tokens (prompt+gen) | Student tokens (prompt+gen) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in document["results"].items():
        tokens = row["tokens"]
        delta = row["accuracy_delta_vs_student"]
        lines.append(
            f"| {_label(key, row)} | {100 * row['accuracy']:.2f} % | "
            f"{'–' if delta is None else f'{100 * delta:+.2f} pp'} | "
            f"{_number(row['accuracy_ratio_vs_teacher'], '.2f')} | {_number(row['speedup_vs_teacher'], '.2f')}x | "
            f"{row['cost']:.4f} | {_number(row['cost_ratio_vs_teacher'], '.2f')} | "
            f"{row['unparsed']}/{row['n']} | {row['failed']} | {row['degraded']} | {row['requests_per_second']:.3f} | "
            f"{tokens['teacher_prompt_tokens']}+{tokens['teacher_completion_tokens']} | "
            f"{tokens['student_prompt_tokens']}+{tokens['student_completion_tokens']} |"
        )
    meta = document
    lines.append(
        f"\n{meta['dataset']}, n={meta['n']}, {meta['shots']}-shot, concurrency {meta['concurrency']}, "
        f"max_tokens {meta['max_tokens']}, teacher: {meta['models']['teacher']}, student: {meta['models']['student']}."
    )
    return "\n".join(lines) + "\n"


def _title(document: dict[str, Any]) -> str:
    return f"{document['dataset']} (n={document['n']}, concurrency {document['concurrency']})"


def _accuracy_top(values: Sequence[float]) -> float:
    """Room above the best accuracy (in %), at most 100."""
    return min(100.0, max(10.0, 1.2 * max(values, default=0.0)))


def plot_accuracy_speedup(document: dict[str, Any], path: Path) -> None:
    """Accuracy and speed-up against K for the GKT rows; teacher-only and student-only as horizontal lines."""
    results = document["results"]
    gkt = sorted((row for row in results.values() if row["mode"] == "gkt"), key=lambda row: row["guidance_tokens"])
    ks = [row["guidance_tokens"] for row in gkt]
    figure = Figure(figsize=(10, 4), layout="constrained")
    accuracy_axes, speedup_axes = figure.subplots(1, 2)
    for axes, field, scale, ylabel in (
        (accuracy_axes, "accuracy", 100.0, "accuracy (%)"),
        (speedup_axes, "speedup_vs_teacher", 1.0, "speed-up vs teacher-only (x)"),
    ):
        values = [row[field] for row in gkt]
        if ks and all(v is not None for v in values):
            axes.plot(ks, [scale * v for v in values], marker="o", color=MODE_COLORS["gkt"], label="GKT")
        for key, style in (("teacher", "--"), ("student", ":")):
            if key in results and results[key][field] is not None:
                axes.axhline(scale * results[key][field], linestyle=style, color=MODE_COLORS[key], label=f"{key} only")
        axes.set_xlabel("guidance tokens K")
        axes.set_ylabel(ylabel)
        if ks:
            axes.set_xticks(ks)
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.set_ylim(0, _accuracy_top([100 * row["accuracy"] for row in results.values()]))
    speedup_axes.set_ylim(bottom=0)
    figure.suptitle(f"GKT: accuracy and speed-up against K, {_title(document)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def plot_cost_accuracy(document: dict[str, Any], path: Path) -> None:
    """Cost against accuracy for every mode."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    markers = {"teacher": "s", "student": "^", "gkt": "o"}
    gkt_shades = iter(("#1b5e20", "#2e7d32", "#43a047", "#66bb6a", "#81c784", "#a5d6a7") * 4)
    results = document["results"]
    for key, row in results.items():
        color = next(gkt_shades) if row["mode"] == "gkt" else MODE_COLORS[row["mode"]]
        axes.scatter(
            row["cost"],
            100 * row["accuracy"],
            color=color,
            marker=markers[row["mode"]],
            s=60,
            label=_label(key, row),
            clip_on=False,
        )
    axes.set_xlabel(f"cost of the {document['n']} questions (edge price settings)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, _accuracy_top([100 * row["accuracy"] for row in results.values()]))
    axes.set_xlim(0, 1.1 * max((row["cost"] for row in results.values()), default=0.0) or 1.0)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.suptitle(f"Cost against accuracy, {_title(document)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def write_plots(document: dict[str, Any], directory: Path, prefix: str) -> list[Path]:
    """Both plots as `<prefix>_accuracy_speedup_vs_k.png` and `<prefix>_cost_vs_accuracy.png` in `directory`."""
    accuracy_speedup = directory / f"{prefix}_{ACCURACY_SPEEDUP_PLOT}"
    cost_accuracy = directory / f"{prefix}_{COST_ACCURACY_PLOT}"
    plot_accuracy_speedup(document, accuracy_speedup)
    plot_cost_accuracy(document, cost_accuracy)
    return [accuracy_speedup, cost_accuracy]
