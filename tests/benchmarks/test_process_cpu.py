"""CPU seconds of a process tree from /proc: a child that burns CPU is counted, through its parent, alive or exited."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.process_cpu import cpu_delta, descendants, tree_cpu_seconds

# A parent that starts a child burning ~0.6 s of CPU, then waits for it (or, with "keep", sleeps while it runs).
BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {BURN!r} + 'time.sleep(30)' * (sys.argv[1] == 'keep')])\n"
    "child.wait() if sys.argv[1] == 'wait' else time.sleep(30)\n"
    "time.sleep(30)\n"
)


def _start(how: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PARENT, how])


def test_a_live_childs_cpu_counts_for_its_parent() -> None:
    parent = _start("keep")
    try:
        before = tree_cpu_seconds(parent.pid)
        assert before is not None
        time.sleep(2.5)  # the child burns its 0.6 s and then sleeps
        assert len(descendants(parent.pid)) == 1
        used = cpu_delta(parent.pid, before)
        assert used is not None and 0.5 <= used <= 2.5
    finally:
        parent.kill()
        parent.wait()


def test_an_exited_and_reaped_childs_cpu_still_counts() -> None:
    parent = _start("wait")
    try:
        time.sleep(2.5)
        assert descendants(parent.pid) == []  # the child has exited
        total = tree_cpu_seconds(parent.pid)
        assert total is not None and total >= 0.5  # its CPU is in the parent's cutime/cstime
    finally:
        parent.kill()
        parent.wait()


def test_a_process_that_is_gone_has_no_reading() -> None:
    finished = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert finished.returncode == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tree_cpu_seconds(gone.pid) is None
    assert cpu_delta(gone.pid, 1.0) is None and cpu_delta(None, 1.0) is None
