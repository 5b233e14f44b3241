"""Reusing the rows of an earlier complete run (pure file handling)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.checkpoint import RecordedRows
from benchmarks.runner import ModeSpec


def test_a_results_file_is_reusable_from_another_checkout(tmp_path: Path) -> None:
    """The results name their answers file by the path it had when written (another checkout's here): the file
    beside the results is read instead, so committed results are reusable wherever the repository is."""
    out = tmp_path / "gsm8k.json"
    fingerprint = {"mode": "teacher", "questions": ["1"]}
    document = {
        "results": {"teacher": {"fingerprint": fingerprint, "wall_seconds": 12.5, "teacher_cpu_seconds": 20.0}},
        "files": {"answers": "/elsewhere/benchmarks/results/gsm8k.answers.jsonl", "plots": []},
    }
    out.write_text(json.dumps(document))
    answer = {"mode": "teacher", "index": 0, "example_id": "1", "gold": "5", "outcome": "correct", "extracted": "5"}
    out.with_suffix(".answers.jsonl").write_text(json.dumps(answer) + "\n")
    recorded = RecordedRows()
    assert recorded.load_results(out) is not None
    run = recorded.find(ModeSpec("teacher"), fingerprint)
    assert run is not None and run.wall_seconds == 12.5 and run.teacher_cpu_seconds == 20.0
    assert [record.extracted for record in run.records] == ["5"]
