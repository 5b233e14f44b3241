"""The interface every teacher backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable

from shared.protocol.domain import GuidanceEvent, GuidanceParams, ServerInfo
from shared.protocol.errors import UnimplementedError
from shared.protocol.verification import VerifyParams, VerifyResult


class TeacherBackend(abc.ABC):
    """Generates guidance. Closing the iterator returned by `generate` aborts the request in the engine."""

    name: str
    # Told (from any thread) when the engine dies for good; the server turns its health NOT_SERVING.
    on_failure: Callable[[BaseException], None] | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Loads the model and warms it up; the server reports SERVING only after this returns."""

    @abc.abstractmethod
    def generate(self, params: GuidanceParams) -> AsyncGenerator[GuidanceEvent, None]:
        """Yields `GuidanceDelta`s as text is produced, then exactly one `GuidanceDone`.

        Raises `InvalidArgumentError` (e.g. a prompt too long for the model), `OverloadedError` or `BackendError`.
        """

    async def verify(self, params: VerifyParams) -> VerifyResult:
        """Scores the draft in one pass on the prefix cache and applies the acceptance rule (`cloud_teacher/
        acceptance.py`); cancelling the call aborts the engine's requests.

        Raises `InvalidArgumentError` (`draft_text` when the answer outgrows the model's context),
        `UnimplementedError` where the engine cannot score text, `OverloadedError` or `BackendError`.
        """
        raise UnimplementedError(f"the {self.name} teacher backend cannot verify drafts")

    @abc.abstractmethod
    def occupancy(self) -> tuple[int, int]:
        """(running, waiting) requests now, for the occupancy gauges."""

    @abc.abstractmethod
    def info(self) -> ServerInfo:
        """What this backend runs (model, engine, dtype, threads, slots); complete once `start` returned."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Aborts everything and frees the engine."""
