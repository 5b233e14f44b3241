"""An ASGI app served by uvicorn on the tier's own asyncio loop, beside its gRPC server, with the tier's TLS settings.

The HTTP door shares the loop (and so the engine and every object) with the gRPC server: no second process, no second
model. Signals stay with the tier's run loop (`run_tier`), which stops this server the way it stops gRPC. Request
bodies are capped at the tier's `max_message_bytes`, as gRPC messages are: a bigger one is refused with 413 before it
is read past the limit, so no client can make the shared loop buffer and parse hundreds of megabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn

from shared.server.settings_base import TierSettings

logger = logging.getLogger(__name__)

# The ASGI types, spelled out here: uvicorn alone does not bring starlette.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLargeError(Exception):
    """Raised inside the app's `receive` once the body passed the limit (the app is then told the client left)."""


class BodySizeLimit:
    """ASGI middleware: refuses an HTTP request whose body is larger than `limit` bytes with 413, in OpenAI's error
    shape. A `Content-Length` above the limit is refused before any of the body is read; a body without one (chunked)
    is counted as it arrives, and the app stops being fed at the chunk that passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    # To the app the client is gone: it stops reading and answering; the 413 is sent from here.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # whatever the app answers to the "disconnect" never reaches the client
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"the request body is larger than {self.limit} bytes, this server's limit "
                    "(max_message_bytes, the same as for gRPC messages)",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        ).encode()
        # No `connection: close`: closing with unread bytes makes the kernel reset the connection, and a client
        # still sending would lose the 413. uvicorn discards the rest of a refused body as it arrives (never
        # buffered, never seen by the app), so the client reads its answer once it has sent.
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: SIGTERM/SIGINT belong to the tier, which calls `HttpServer.stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _whole_seconds(grace: float) -> int:
    """uvicorn's shutdown timeout: whole seconds, at least 1 (with 0 it times out, and logs an error, even when no
    request is in flight; with nothing in flight it returns at once anyway)."""
    return max(1, math.ceil(grace))


def _bind(host: str, port: int) -> socket.socket:
    """A bound socket (port 0 resolved at once, so the port can be reported before the first request)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves `app` on `host:port` (0 picks a free port); TLS (and mutual TLS) as the tier's settings say."""

    def __init__(self, app: Any, host: str, port: int, settings: TierSettings) -> None:
        tls = settings.tls_cert_file is not None and settings.tls_key_file is not None
        self.config = uvicorn.Config(
            BodySizeLimit(app, settings.max_message_bytes),
            host=host,
            port=port,
            log_config=None,  # the tier configured logging; uvicorn's loggers go through it
            access_log=False,  # as on gRPC: requests are logged by the code that serves them
            lifespan="off",  # the tier loads and frees the model, not the app
            server_header=False,
            ssl_certfile=settings.tls_cert_file if tls else None,
            ssl_keyfile=settings.tls_key_file if tls else None,
            ssl_ca_certs=settings.tls_client_ca_file if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and settings.tls_client_ca_file else ssl.CERT_NONE,
            timeout_graceful_shutdown=_whole_seconds(settings.shutdown_grace_seconds),
        )
        self.tls = tls
        self.host = host
        self.port = 0
        self._server = _EmbeddedServer(self.config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Binds the port and starts serving; returns once uvicorn accepts connections."""
        self.config.load()  # a bad certificate or key fails here, in the caller, not in a background task
        sock = _bind(self.host, self.config.port)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why uvicorn stopped
                raise RuntimeError("the HTTP server stopped before it started")
            await asyncio.sleep(0.01)
        logger.info("HTTP listening on %s://%s:%s", "https" if self.tls else "http", self.host, self.port)

    async def stop(self, grace: float) -> None:
        """Closes the listener, lets requests in flight finish within `grace` seconds, then cancels the rest."""
        if self._task is None:
            return
        self.config.timeout_graceful_shutdown = _whole_seconds(grace)
        self._server.should_exit = True
        await self._task
        self._task = None
