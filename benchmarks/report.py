"""Turns mode runs into the results JSON, the paper-style Markdown table and the PNG plots."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from benchmarks.runner import USAGE_FIELDS, AnswerRecord, ModeRun, record_to_json
from shared.pricing import Prices

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
    }


def ideal_seconds(row: dict[str, Any], teacher_rate: float, student_rate: float) -> float | None:
    """A GKT mode's time if each tier wrote its tokens at its own measured rate, one after the other: the
    teacher's K tokens at the teacher-only rate, then the student's at the student-only rate (tokens/s)."""
    if not teacher_rate or not student_rate:
        return None
    tokens = row["tokens"]
    return float(
        tokens["teacher_completion_tokens"] / teacher_rate + tokens["student_completion_tokens"] / student_rate
    )


def add_comparisons(results: dict[str, dict[str, Any]]) -> None:
    """Ratios against the teacher-only row and the same student's student-only row of the same run (None where a
    baseline is missing or zero), and the ideal GKT speed-up from the two baselines' token rates."""
    teacher = results.get("teacher")
    students = {row["student"]: row for row in results.values() if row["mode"] == "student"}
    for row in results.values():
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
        row["accuracy_delta_vs_student"] = row["accuracy"] - student["accuracy"] if student else None
        row["ideal_speedup_vs_teacher"] = row["achieved_vs_ideal_speedup"] = None
        if row["mode"] == "gkt" and teacher and student:
            ideal = ideal_seconds(row, teacher["generated_tokens_per_second"], student["generated_tokens_per_second"])
            row["ideal_speedup_vs_teacher"] = _ratio(teacher["wall_seconds"], ideal)
            if row["ideal_speedup_vs_teacher"] and row["speedup_vs_teacher"]:
                row["achieved_vs_ideal_speedup"] = row["speedup_vs_teacher"] / row["ideal_speedup_vs_teacher"]


def build_results(runs: Sequence[ModeRun], prices: Prices) -> dict[str, dict[str, Any]]:
    """`results` of the JSON: one entry per mode ("teacher", "student", "gkt@K", with ":<student>" when a run
    compares several students), in run order."""
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


def _label(row: dict[str, Any]) -> str:
    policy = f", {row['policy']}" if row.get("policy") not in (None, "fixed") else ""
    gkt = f"GKT (K={row['guidance_tokens']}{policy})"
    base = {"teacher": "Teacher only", "student": "Student only"}.get(row["mode"], gkt)
    return f"{base}, {row['student']}" if row["student"] else base


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def markdown_table(document: dict[str, Any]) -> str:
    """The paper's table for one dataset: accuracy and speed-up per setting (with the ideal speed-up from the
    tiers' own token rates), the teacher's time, cost with and without the cached-prompt discount, failures."""
    lines = [
        "| Setting | Accuracy | Δ vs student | Acc. / teacher | Speed-up | Ideal speed-up | Achieved / ideal "
        "| Teacher time / teacher | Cost / teacher | Cost / teacher (no cache discount) | Unparsed | Failed "
        "| Degraded | Teacher tokens (prompt, cached, gen) | Student tokens (prompt, cached, gen) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in document["results"].values():
        t = row["tokens"]
        delta = row["accuracy_delta_vs_student"]
        lines.append(
            f"| {_label(row)} | {100 * row['accuracy']:.2f} % | "
            f"{'–' if delta is None else f'{100 * delta:+.2f} pp'} | "
            f"{_number(row['accuracy_ratio_vs_teacher'], '.2f')} | {_number(row['speedup_vs_teacher'], '.2f', 'x')} | "
            f"{_number(row['ideal_speedup_vs_teacher'], '.2f', 'x')} | "
            f"{_number(row['achieved_vs_ideal_speedup'], '.2f')} | "
            f"{_number(row['teacher_seconds_ratio_vs_teacher'], '.2f')} | "
            f"{_number(row['cost_ratio_vs_teacher'], '.3f')} | "
            f"{_number(row['cost_list_price_ratio_vs_teacher'], '.3f')} | "
            f"{row['unparsed']}/{row['n']} | {row['failed']} | {row['degraded']} | "
            f"{t['teacher_prompt_tokens']}, {t['teacher_cached_prompt_tokens']}, {t['teacher_completion_tokens']} | "
            f"{t['student_prompt_tokens']}, {t['student_cached_prompt_tokens']}, {t['student_completion_tokens']} |"
        )
    meta = document
    students = "; ".join(f"{key or 'student'}: {text}" for key, text in meta["models"]["students"].items())
    lines.append(
        f"\n{meta['dataset']}, n={meta['n']}, {meta['shots']}-shot, concurrency {meta['concurrency']}, "
        f"max_tokens {meta['max_tokens']}. Teacher: {meta['models']['teacher']}. {students}."
    )
    return "\n".join(lines) + "\n"


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


def _title(document: dict[str, Any]) -> str:
    return f"{document['dataset']} (n={document['n']}, concurrency {document['concurrency']})"


def _accuracy_top(values: Sequence[float]) -> float:
    """Room above the best accuracy (in %), at most 100."""
    return min(100.0, max(10.0, 1.2 * max(values, default=0.0)))


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
        (accuracy_axes, "accuracy", 100.0, "accuracy (%)"),
        (speedup_axes, "speedup_vs_teacher", 1.0, "speed-up vs teacher-only (x)"),
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
                axes.plot(ks, [scale * v for v in values], marker="o", color=color, label=label)
            alone = next((r for r in results.values() if r["mode"] == "student" and r["student"] == student), None)
            if alone is not None and alone[field] is not None:
                axes.axhline(scale * alone[field], linestyle=":", color=color, label=f"{student or 'student'} only")
        if "teacher" in results and results["teacher"][field] is not None:
            axes.axhline(
                scale * results["teacher"][field], linestyle="--", color=MODE_COLORS["teacher"], label="teacher only"
            )
        axes.set_xlabel("guidance tokens K")
        axes.set_ylabel(ylabel)
        if all_ks:
            axes.set_xticks(sorted(all_ks))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
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
    results = document["results"]
    students = list(dict.fromkeys(row["student"] for row in results.values() if row["mode"] != "teacher"))
    colors = dict(zip(students, STUDENT_COLORS * 4, strict=False))
    for row in results.values():
        color = MODE_COLORS["teacher"] if row["mode"] == "teacher" else colors[row["student"]]
        if row["mode"] == "gkt":
            axes.annotate(f"K={row['guidance_tokens']}", (row["cost"], 100 * row["accuracy"]), fontsize="x-small")
        axes.scatter(
            row["cost"],
            100 * row["accuracy"],
            color=color,
            marker=markers[row["mode"]],
            s=60,
            label=_label(row).replace(f" (K={row['guidance_tokens']})", "") if row["mode"] == "gkt" else _label(row),
            clip_on=False,
        )
    axes.set_xlabel(f"cost of the {document['n']} questions (edge price settings)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, _accuracy_top([100 * row["accuracy"] for row in results.values()]))
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
    axes.set_ylabel("accuracy (%)")
    axes.set_xlim(left=0)
    axes.set_ylim(0, _accuracy_top([100 * row["accuracy"] for row in results.values()]))
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


def main(argv: Sequence[str]) -> int:
    """`python -m benchmarks.report RESULTS.json...`: print each results file's tables again."""
    if not argv:
        sys.stderr.write("usage: python -m benchmarks.report RESULTS.json [RESULTS.json ...]\n")
        return 2
    for name in argv:
        document = json.loads(Path(name).read_text(encoding="utf-8"))
        sys.stdout.write(f"\n{name}\n\n" + markdown_table(document) + "\n" + policy_table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
