"""One HTTP request's life around the answer flow: its deadline, its client going away, its stream being closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar, cast

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from shared.protocol.domain import Answer, AnswerEvent
from shared.protocol.errors import ClientGoneError, DeadlineExceededError

T = TypeVar("T")


class ClosingStreamingResponse(StreamingResponse):
    """A streamed response that closes its body generator however the response ends.

    A client that disconnects while a chunk is being sent leaves the generator suspended at a `yield`; closing it
    at once (not whenever it is garbage-collected) is what frees the student slot and aborts the teacher call.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # Starlette cancels the stream's task group on disconnect
                await cast(AsyncGenerator[str, None], self.body_iterator).aclose()


async def within_deadline(
    events: AsyncIterator[AnswerEvent], deadline: float | None
) -> AsyncGenerator[AnswerEvent, None]:
    """The answer's events, up to the request's deadline (then `DeadlineExceededError`: 504, as gRPC's deadline)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if deadline is None:
                event = await anext(events)
            else:
                event = await asyncio.wait_for(anext(events), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DeadlineExceededError("the answer did not finish within the request's timeout_seconds") from None
        yield event


async def final_answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    async for event in events:
        if isinstance(event, Answer):
            return event
    raise RuntimeError("the answer flow ended without an answer")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`; if the client disconnects first, cancels it (the answer flow then frees the student slot and
    aborts the teacher call) and raises `ClientGoneError`."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished = task.done()
        task.cancel()  # no-op once done
        watch.cancel()
        await asyncio.wait((task, watch))  # the cancelled work cleans up (frees its slot) before the caller goes on
    if finished:
        return task.result()
    raise ClientGoneError("the client disconnected before the answer was complete")


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def close(*generators: AsyncGenerator[AnswerEvent, None]) -> None:
    """Closes the wrapper, then the answer flow itself (its cleanup cancels the student's sequence)."""
    for generator in generators:
        await generator.aclose()
