"""CPU seconds of a process and all its descendants, read from /proc (a service's compute, child processes included:
vLLM runs its engine core in a child process)."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses); None when the
    process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rfind(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, grandchildren, ...), from every process's parent id."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by `pid` and its live descendants, plus those of their children that
    already exited and were waited for (the kernel adds them to the parent's `cutime`/`cstime`). None when `pid` is
    not running. Take the difference of two readings to get the CPU of an interval."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total = 0
    for index, process in enumerate([pid, *descendants(pid)]):
        fields = _stat_fields(process)
        if fields is None:
            if index == 0:
                return None
            continue  # exited between the listing and the reading
        # Fields 14-17 of proc(5): utime, stime, cutime, cstime (in clock ticks); `fields` starts at field 3.
        total += sum(int(value) for value in fields[11:15])
    return total / ticks_per_second


def cpu_delta(pid: int | None, before: float | None) -> float | None:
    """CPU seconds `pid`'s tree used since the reading `before` (None when either reading is missing)."""
    if pid is None or before is None:
        return None
    after = tree_cpu_seconds(pid)
    return None if after is None else max(0.0, after - before)
