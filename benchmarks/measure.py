"""One mode of a benchmark run as a measurement: every mode from the same cache state (launched services restarted
when an earlier mode used them, then warmed on a held-out question), the teacher's and the edge's CPU read around it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from benchmarks.datasets import Example
from benchmarks.process_cpu import cpu_delta, tree_cpu_seconds
from benchmarks.prompts import Prompts
from benchmarks.runner import ModeRun, ModeSpec, RequestSettings, run_mode
from benchmarks.services import Services

if TYPE_CHECKING:
    from benchmarks.gkt_bench import BenchConfig

logger = logging.getLogger(__name__)

# The untimed warm-up request of each mode: a few teacher tokens and a few student tokens are enough to put the
# shared prefix into both tiers' caches.
WARM_UP_GUIDANCE_TOKENS = 4
WARM_UP_MAX_TOKENS = 8  # the whole answer: the 4 tokens of guidance, then the student's (both tiers warm)


def uses(spec: ModeSpec) -> tuple[bool, bool]:
    """Whether a mode's requests reach (the teacher, its student's engine). Teacher-only requests pass through an
    edge without touching its student."""
    return spec.mode in ("teacher", "gkt"), spec.mode in ("student", "gkt")


@dataclass
class CacheState:
    """Which tiers served evaluated questions since they were last (re)started and warmed."""

    teacher_used: bool = False
    edges_used: set[str | None] = field(default_factory=set)

    def restart_needed(self, spec: ModeSpec) -> list[str | None] | Literal[False] | None:
        """What to restart before `spec`: False (nothing), None (the teacher, hence every edge) or edge labels."""
        teacher, student = uses(spec)
        if teacher and self.teacher_used:
            return None
        if student and spec.student in self.edges_used:
            return [spec.student]
        return False

    def restarted(self, labels: list[str | None] | None) -> None:
        if labels is None:
            self.teacher_used = False
            self.edges_used.clear()
        else:
            self.edges_used.difference_update(labels)

    def used(self, spec: ModeSpec) -> None:
        teacher, student = uses(spec)
        self.teacher_used |= teacher
        if student:
            self.edges_used.add(spec.student)


class ModeMeasurer:
    """Runs one mode as a measurement: a clean cache first (launched services restarted if an earlier mode used
    them, then warmed on a held-out question), the teacher's and edge's CPU read before and after."""

    def __init__(
        self,
        config: BenchConfig,
        services: Services,
        prompts: Prompts,
        examples: Sequence[Example],
        settings: RequestSettings,
    ) -> None:
        self.config, self.services, self.prompts = config, services, prompts
        self.examples, self.settings = examples, settings
        self.state = CacheState()
        # The warm-up question: the first few-shot exemplar, never evaluated (in either workload), which shares the
        # evaluated questions' prefix (the exemplars, or the chat system prompt) and nothing else of theirs.
        self.held_out = prompts.exemplars[0]

    async def warm(self, labels: Sequence[str | None]) -> None:
        """One untimed GKT request on the held-out question through each edge of `labels` (so both tiers)."""
        if not self.config.warm_up:
            return
        settings = replace(self.settings, max_tokens=WARM_UP_MAX_TOKENS)
        for label in labels:
            await run_mode(
                self.services.stub(label),
                ModeSpec("gkt", WARM_UP_GUIDANCE_TOKENS),
                [self.held_out],
                dataset=self.config.dataset,
                prompts=self.prompts,
                settings=settings,
                concurrency=1,
                progress=False,
            )

    async def measure(self, spec: ModeSpec) -> ModeRun:
        restart_seconds = 0.0
        if self.services.launched and self.config.restart_between_modes:
            labels = self.state.restart_needed(spec)
            if labels is not False:
                started = time.perf_counter()
                logger.info(
                    "%s: restarting %s for a clean cache", spec.key, "all services" if labels is None else labels
                )
                await self.services.restart(labels)
                self.state.restarted(labels)
                await self.warm(list(self.services.addresses) if labels is None else labels)
                restart_seconds = time.perf_counter() - started
        teacher_pid = self.services.teacher_pid()
        edge_pids = self.services.edge_pids(spec.student if spec.mode != "teacher" else None)
        teacher_before = tree_cpu_seconds(teacher_pid) if teacher_pid is not None else None
        edge_before = [tree_cpu_seconds(pid) for pid in edge_pids]
        label = spec.student if spec.mode != "teacher" else next(iter(self.services.addresses))
        run = await run_mode(
            self.services.stub(label),
            spec,
            self.examples,
            dataset=self.config.dataset,
            prompts=self.prompts,
            settings=self.settings,
            concurrency=self.config.concurrency,
            progress=self.config.progress,
        )
        run.teacher_cpu_seconds = cpu_delta(teacher_pid, teacher_before)
        if spec.mode != "teacher" and edge_pids:
            run.edge_cpu_seconds = cpu_delta(edge_pids[0], edge_before[0])
        run.restart_seconds = restart_seconds
        self.state.used(spec)
        return run
