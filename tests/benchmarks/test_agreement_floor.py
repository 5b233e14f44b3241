"""The agreement floor between two runs' answers files (pure logic on hand-written answers)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.agreement_floor import compare, load_mode, main


def write_answers(path: Path, rows: list[tuple[str, str, str | None, str]]) -> Path:
    lines = [
        json.dumps(
            {"mode": mode, "index": i, "example_id": qid, "gold": "5", "extracted": extracted, "outcome": outcome}
        )
        for i, (mode, qid, extracted, outcome) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_agreement_counts_same_extracted_answers_and_never_two_unparsed(tmp_path: Path) -> None:
    first = write_answers(
        tmp_path / "a.jsonl",
        [
            ("teacher", "1", "5", "correct"),
            ("teacher", "2", "7", "wrong"),
            ("teacher", "3", None, "unparsed"),
            ("teacher", "4", "9", "correct"),
            ("student:x", "1", "6", "wrong"),
        ],
    )
    second = write_answers(
        tmp_path / "b.jsonl",
        [
            ("teacher", "1", "5", "correct"),
            ("teacher", "2", "8", "correct"),
            ("teacher", "3", None, "unparsed"),
            ("teacher", "5", "1", "correct"),  # not in the first run: not compared
        ],
    )
    result = compare(load_mode(first, "teacher"), load_mode(second, "teacher"))
    assert (result["n"], result["agree"]) == (3, 1)
    assert result["differing_questions"] == ["2", "3"]  # the n - agree questions: both unparsed never agree
    assert (result["right_in_first_only"], result["right_in_second_only"]) == (0, 1)
    assert result["accuracy_first"] == 1 / 3 and result["accuracy_second"] == 2 / 3
    out = tmp_path / "floor.json"
    assert main([str(first), str(second), "--label", "c4", "--label", "c1", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["runs"][1]["label"] == "c1" and written["agree"] == 1
    assert main([str(first), str(second), "--first-mode", "nope"]) == 2
