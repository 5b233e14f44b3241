"""A circuit breaker for the teacher: after repeated failures the edge stops calling it for a while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed: calls go through. `failure_threshold` consecutive failures open it: calls are refused at once
    (answers go degraded without waiting for deadlines). After `reset_seconds` one trial call is let through
    (half-open): success closes the breaker, failure opens it again."""

    def __init__(
        self, failure_threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether to call the teacher now (in half-open state, only one trial at a time)."""
        state = self.state
        if state == "closed":
            return True
        now = self._clock()
        # A trial whose caller vanished without an outcome must not block the breaker forever.
        if state == "half_open" and (
            self._trial_started_at is None or now - self._trial_started_at >= self.reset_seconds
        ):
            self._trial_started_at = now
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:
            logger.info("teacher reachable again: circuit breaker closed")
        self._failures = 0
        self._opened_at = None
        self._trial_started_at = None

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_started_at = None
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                logger.warning(
                    "teacher failed %d times in a row: circuit breaker open for %.0fs",
                    self._failures,
                    self.reset_seconds,
                )
            self._opened_at = self._clock()
