"""The interface every teacher backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable

from shared.protocol.domain import GuidanceEvent, GuidanceParams, ServerInfo


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

    @abc.abstractmethod
    def occupancy(self) -> tuple[int, int]:
        """(running, waiting) requests now, for the occupancy gauges."""

    @abc.abstractmethod
    def info(self) -> ServerInfo:
        """What this backend runs (model, engine, dtype, threads, slots); complete once `start` returned."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Aborts everything and frees the engine."""
