"""Finished rows of a long benchmark run, kept on disk as they finish, so an interrupted run can be resumed."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.runner import AnswerRecord, ModeRun, ModeSpec

logger = logging.getLogger(__name__)


def checkpoint_path(out: Path) -> Path:
    """`<out stem>.progress.jsonl` beside the results JSON: one line per finished row."""
    return out.with_suffix(".progress.jsonl")


class Checkpoint:
    """Rows are appended as they finish; a resumed run reuses rows recorded for the same run (`fingerprint`: the
    questions, request settings and models) and measures the rest."""

    def __init__(self, path: Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = path  # None: a run that writes no files keeps no checkpoint either
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as read back (tuples become lists)

    def load(self) -> dict[str, tuple[float, list[AnswerRecord]]]:
        """The rows recorded for this run, by mode key: (wall seconds, records). Rows of another run are ignored."""
        rows: dict[str, tuple[float, list[AnswerRecord]]] = {}
        if self.path is None or not self.path.is_file():
            return rows
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                row = json.loads(line)
                if row["fingerprint"] != self.fingerprint:
                    logger.warning("%s:%d: a row of another run (other questions, settings, models)", self.path, number)
                    continue
                rows[row["mode"]] = (float(row["wall_seconds"]), [AnswerRecord(**r) for r in row["records"]])
            except (ValueError, KeyError, TypeError) as error:  # a line cut short by the interruption
                logger.warning("%s:%d: unreadable row skipped (%s)", self.path, number, error)
        return rows

    def resumed(self, spec: ModeSpec, rows: dict[str, tuple[float, list[AnswerRecord]]]) -> ModeRun | None:
        """The recorded run of `spec`, if there is one."""
        if spec.key not in rows:
            return None
        wall_seconds, records = rows[spec.key]
        return ModeRun(spec, records, wall_seconds)

    def save(self, run: ModeRun) -> None:
        """Appends one finished row (flushed at once: the next row may take an hour)."""
        if self.path is None:
            return
        row = {
            "mode": run.spec.key,
            "fingerprint": self.fingerprint,
            "wall_seconds": run.wall_seconds,
            "records": [asdict(record) for record in run.records],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")

    def discard(self) -> None:
        """Removes the file once the whole run is written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
