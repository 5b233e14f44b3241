"""The edge as a service, whatever door a request comes through: the answer flow once the student is loaded,
readiness, and the accounting of every finished answer.

The gRPC servicer and the OpenAI-compatible HTTP routes decode their wire format into `GenerateParams`, ask this
service for the answer and encode what it yields; neither knows the other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable

from edge_student.accounting import account_answer
from edge_student.answer_flow import AnswerFlow
from edge_student.settings import EdgeSettings
from shared.hardware import server_info
from shared.metrics import Api, GktMetrics
from shared.protocol.domain import Answer, AnswerEvent, GenerateParams, ServerInfo
from shared.protocol.errors import NotReadyError
from shared.server.request_context import outcome_counted

logger = logging.getLogger(__name__)


class EdgeService:
    """One edge: its settings, metrics and (once `start`ed) its answer flow."""

    def __init__(self, settings: EdgeSettings, metrics: GktMetrics, serving: Callable[[], bool] = lambda: True) -> None:
        self.settings = settings
        self._metrics = metrics
        self._serving = serving  # the gRPC health's SERVING: loaded, warmed and not shutting down
        self._prices = settings.prices()
        self._flow: AnswerFlow | None = None  # None until the student is loaded

    def start(self, flow: AnswerFlow) -> None:
        """The student is loaded and warmed: requests reach `flow` from now on."""
        self._flow = flow

    def serving(self) -> bool:
        """What the health check says: loaded and warmed, and not shutting down."""
        return self._serving()

    def ready_flow(self) -> AnswerFlow:
        """The answer flow, once the student is loaded (`NotReadyError` before)."""
        if self._flow is None:
            raise NotReadyError("the student model is still loading; retry when health reports SERVING")
        return self._flow

    def answer(
        self, params: GenerateParams, timeout: float | None, *, while_serving: bool = False
    ) -> AsyncGenerator[AnswerEvent, None]:
        """The answer's events (deltas, then the `Answer`); `NotReadyError` at once if the student is not loaded or,
        with `while_serving`, if the edge is shutting down."""
        flow = self.ready_flow()
        if while_serving and not self._serving():
            raise NotReadyError("the edge is not serving (shutting down); retry another replica")
        return flow.answer(params, timeout)

    def info(self, flow: AnswerFlow) -> ServerInfo:
        """What this edge runs."""
        s = self.settings
        return server_info(
            "edge",
            s.model,
            model_file=str(flow.engine.model.path),
            backend="llamacpp",
            threads=s.n_threads,
            slots=s.n_slots,
        )

    def finish(self, answer: Answer, *, api: Api) -> None:
        """Counts and logs a finished answer (both doors end here, so the metrics see every request)."""
        account_answer(self._metrics, answer, self._prices, api=api)
        outcome_counted.set(True)
        usage, timings = answer.usage, answer.timings
        logger.info(
            "%s answer: teacher %d+%d tokens, student %d+%d tokens, %.2fs%s",
            answer.mode,
            usage.teacher_prompt_tokens,
            usage.teacher_completion_tokens,
            usage.student_prompt_tokens,
            usage.student_completion_tokens,
            timings.total_seconds,
            f" (degraded: {answer.degraded_reason})" if answer.degraded else "",
        )
