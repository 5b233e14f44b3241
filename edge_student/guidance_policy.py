"""When the student has read enough guidance (adaptive policy), and when it is unsure enough to ask for more."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from shared.llama.scoring import TokenScore
from shared.protocol.domain import GuidancePolicy


def student_agrees(policy: GuidancePolicy, scores: Sequence[TokenScore]) -> bool:
    """True when the last `window` scored guidance tokens were (mostly) the student's own choices: it has caught
    up with the teacher and would write the same tokens itself."""
    if len(scores) < policy.window:
        return False
    window = scores[-policy.window :]
    top1 = sum(score.top1 for score in window) / len(window)
    return top1 >= policy.min_top1_fraction and statistics.fmean(s.logprob for s in window) >= policy.min_mean_logprob


class UncertaintyWatch:
    """Counts the student's unsure tokens in a row while it writes: a long enough run calls for a teacher burst."""

    def __init__(self, policy: GuidancePolicy) -> None:
        self._policy = policy
        self._seen = 0  # entropies already looked at
        self._run = 0
        self.bursts = 0

    def wants_burst(self, entropies: Sequence[float]) -> bool:
        """Reads the entropies reported since the last call; True when a burst is due (and allowed)."""
        for value in entropies[self._seen :]:
            self._run = self._run + 1 if value > self._policy.entropy_threshold else 0
        self._seen = len(entropies)
        return self._policy.escalate and self.bursts < self._policy.max_bursts and self._run >= self._policy.entropy_run

    def burst_taken(self) -> None:
        """A burst was appended: count it and start a new run."""
        self.bursts += 1
        self._run = 0
