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

from benchmarks.stats import mcnemar_exact, wilson_interval


def load_mode(path: Path, mode: str) -> dict[str, dict[str, Any]]:
    """One mode's answers of an answers file, by question id."""
    answers: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        answer = json.loads(line)
        if answer["mode"] == mode:
            answers[str(answer["example_id"])] = answer
    if not answers:
        raise ValueError(f"{path} has no answers of mode {mode!r}")
    return answers


def compare(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Agreement of the extracted answers (an unparsed or failed answer never agrees) and the paired accuracy test."""
    shared = sorted(first.keys() & second.keys(), key=lambda key: (len(key), key))
    same = sum(
        first[key]["extracted"] is not None and first[key]["extracted"] == second[key]["extracted"] for key in shared
    )
    first_only = sum(first[k]["outcome"] == "correct" and second[k]["outcome"] != "correct" for k in shared)
    second_only = sum(first[k]["outcome"] != "correct" and second[k]["outcome"] == "correct" for k in shared)
    n = len(shared)
    return {
        "n": n,
        "agree": same,
        "agreement": same / n if n else None,
        "agreement_ci": list(wilson_interval(same, n)),
        "accuracy_first": sum(first[k]["outcome"] == "correct" for k in shared) / n if n else None,
        "accuracy_second": sum(second[k]["outcome"] == "correct" for k in shared) / n if n else None,
        "right_in_first_only": first_only,
        "right_in_second_only": second_only,
        "mcnemar_p": mcnemar_exact(first_only, second_only),
        "differing_questions": [k for k in shared if first[k]["extracted"] != second[k]["extracted"]],
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
