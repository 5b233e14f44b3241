"""Finished rows of benchmark runs, kept so a later run reuses them: the rows an interrupted run recorded as they
finished, and the rows of the last complete run's results. A row is reused when its own settings match."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from benchmarks.runner import AnswerRecord, ModeRun, ModeSpec

logger = logging.getLogger(__name__)

# What a row keeps besides its answers (the measurements of its pass).
_MEASUREMENTS = ("wall_seconds", "teacher_cpu_seconds", "edge_cpu_seconds", "restart_seconds")
_RECORD_FIELDS = {f.name for f in fields(AnswerRecord)}


def checkpoint_path(out: Path) -> Path:
    """`<out stem>.progress.jsonl` beside the results JSON: one line per finished row."""
    return out.with_suffix(".progress.jsonl")


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A row's settings as one canonical string (tuples and lists alike, keys sorted)."""
    return json.dumps(fingerprint, sort_keys=True)


def record_from_json(data: dict[str, Any]) -> AnswerRecord:
    """One answer as the answers and progress files hold it (fields this version does not know are dropped)."""
    return AnswerRecord(**{key: value for key, value in data.items() if key in _RECORD_FIELDS})


def _row_run(spec: ModeSpec, row: dict[str, Any], records: list[AnswerRecord]) -> ModeRun:
    run = ModeRun(spec, records, float(row["wall_seconds"]))
    run.teacher_cpu_seconds = row.get("teacher_cpu_seconds")
    run.edge_cpu_seconds = row.get("edge_cpu_seconds")
    run.restart_seconds = float(row.get("restart_seconds") or 0.0)
    return run


class RecordedRows:
    """Rows recorded earlier, by their settings (`fingerprint_key`): measurements and answers."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[dict[str, Any], list[AnswerRecord]]] = {}

    def add(self, fingerprint: dict[str, Any], row: dict[str, Any], records: list[AnswerRecord]) -> None:
        self.rows[fingerprint_key(fingerprint)] = (row, records)

    def find(self, spec: ModeSpec, fingerprint: dict[str, Any]) -> ModeRun | None:
        """The recorded run with exactly these settings, as a row of this run (`spec`), or None."""
        found = self.rows.get(fingerprint_key(fingerprint))
        return None if found is None else _row_run(spec, *found)

    def load_progress(self, path: Path) -> None:
        """Rows an interrupted run appended to its progress file (a line cut short by the interruption skipped)."""
        if not path.is_file():
            return
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                row = json.loads(line)
                self.add(row["fingerprint"], row, [record_from_json(r) for r in row["records"]])
            except (ValueError, KeyError, TypeError) as error:
                logger.warning("%s:%d: unreadable row skipped (%s)", path, number, error)

    def load_results(self, out: Path) -> dict[str, Any] | None:
        """Rows of the complete run whose results are at `out` (each row's settings are in its `fingerprint`, its
        answers in the answers file); returns that document, or None when there is none to read."""
        if not out.is_file():
            return None
        try:
            document = json.loads(out.read_text())
            # The answers file is written beside the results; the recorded path is where it was then (another
            # checkout's, or relative to another directory), so it is only the fallback.
            answers = out.with_suffix(".answers.jsonl")
            if not answers.is_file():
                answers = Path(document["files"]["answers"])
            by_mode: dict[str, list[AnswerRecord]] = {}
            for line in answers.read_text().splitlines():
                answer = json.loads(line)
                by_mode.setdefault(answer["mode"], []).append(record_from_json(answer))
        except (ValueError, KeyError, TypeError, OSError) as error:
            logger.warning("%s: earlier results not reusable (%s)", out, error)
            return None
        for key, row in document.get("results", {}).items():
            if "fingerprint" in row and key in by_mode:
                self.add(row["fingerprint"], row, by_mode[key])
        return dict(document)


class Checkpoint:
    """Rows are appended to the progress file as they finish (flushed at once: the next row may take an hour)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: a run that writes no files keeps no checkpoint either

    def save(self, run: ModeRun, fingerprint: dict[str, Any]) -> None:
        if self.path is None:
            return
        row: dict[str, Any] = {"mode": run.spec.key, "fingerprint": fingerprint}
        row |= {name: getattr(run, name) for name in _MEASUREMENTS}
        row["records"] = [asdict(record) for record in run.records]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")

    def discard(self) -> None:
        """Removes the file once the whole run is written (its rows are in the results then)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
