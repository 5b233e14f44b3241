"""The agreement floor: how often two teacher-only runs that differ only in batch shape state the same answer.

Greedy decoding is not bit-stable across batch shapes (a near-tie flips when the teacher batches differently), so
even the teacher does not always agree with itself; a strict verify policy can reach this floor but not beat it.
Reads two `gkt bench` answers files (for example teacher-only at concurrency 4 from the main run, and a
`--modes teacher --concurrency 1` run), compares one mode of each on the questions both answered, and writes the
agreement (Wilson 95 %) and the accuracy difference (exact McNemar) as JSON.

    python -m benchmarks.agreement_floor A.answers.jsonl B.answers.jsonl --out benchmarks/results/gsm8k_floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.checkpoint import record_from_json
from benchmarks.report import agreement, paired_answers, paired_test, same_answer
from benchmarks.runner import ModeRun, ModeSpec


def load_mode(path: Path, mode: str) -> ModeRun:
    """One mode's answers of an answers file, as a row (its wall time is not in the answers file: 0)."""
    records = []
    for line in path.read_text().splitlines():
        answer = json.loads(line)
        if answer["mode"] == mode:
            records.append(record_from_json(answer))
    if not records:
        raise ValueError(f"{path} has no answers of mode {mode!r}")
    return ModeRun(ModeSpec("teacher"), records, 0.0)


def compare(first: ModeRun, second: ModeRun) -> dict[str, Any]:
    """Agreement of the extracted answers (the report's: an unparsed or failed answer never agrees), each run's
    accuracy on the questions both answered, the paired McNemar test, and the questions whose answers differ."""
    agreed = agreement(first, second)
    test = paired_test(first, second)
    shared = paired_answers(first, second)
    n = len(shared)
    return {
        "n": n,
        "agree": agreed["agree"],
        "agreement": agreed["rate"],
        "agreement_ci": agreed["ci"],
        "accuracy_first": sum(a.outcome == "correct" for a, _ in shared) / n if n else None,
        "accuracy_second": sum(b.outcome == "correct" for _, b in shared) / n if n else None,
        "right_in_first_only": test["better"],
        "right_in_second_only": test["worse"],
        "mcnemar_p": test["p_value"],
        # The questions that did not agree, by the report's rule (two unparsed answers included).
        "differing_questions": [a.example_id for a, b in shared if not same_answer(a, b)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agreement_floor", description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path, help="an answers file (<results>.answers.jsonl)")
    parser.add_argument("second", type=Path, help="another answers file, same dataset and workload")
    parser.add_argument("--first-mode", default="teacher", help="the mode compared in the first file")
    parser.add_argument("--second-mode", default="teacher", help="the mode compared in the second file")
    parser.add_argument("--label", action="append", default=[], help="what each run was (twice: first, second)")
    parser.add_argument("--out", type=Path, help="write the comparison here as JSON")
    args = parser.parse_args(argv)
    try:
        result = compare(load_mode(args.first, args.first_mode), load_mode(args.second, args.second_mode))
    except (OSError, ValueError, KeyError) as error:
        print(f"agreement_floor: {error}", file=sys.stderr)
        return 2
    labels = [*args.label, "", ""]
    result = {
        "runs": [
            {"file": str(args.first), "mode": args.first_mode, "label": labels[0]},
            {"file": str(args.second), "mode": args.second_mode, "label": labels[1]},
        ],
        **result,
    }
    low, high = result["agreement_ci"]
    print(
        f"agreement {result['agree']}/{result['n']} = {100 * (result['agreement'] or 0):.1f} % "
        f"[{100 * low:.1f}, {100 * high:.1f}]; accuracy {result['accuracy_first']:.3f} vs "
        f"{result['accuracy_second']:.3f} (McNemar p = {result['mcnemar_p']:.3f})"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
