"""TLS / mutual TLS credentials and bearer-token authentication for both tiers' gRPC servers (the token check is
shared with the edge's HTTP facade)."""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from shared.metrics import GktMetrics
from shared.protocol.errors import GktError, PermissionDeniedError, UnauthenticatedError
from shared.server.interceptors import ErrorInterceptor
from shared.server.secrets import check_bearer_token
from shared.server.settings_base import SettingsError, TierSettings

logger = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _check_certificate_pair(cert_file: Path, key_file: Path, what: str) -> None:
    """Fails with a `SettingsError` naming the files unless they hold a PEM certificate and its private key.

    gRPC itself reports a bad file only as "Failed to bind to address" (server) or a failed handshake at the
    first call (client); the placeholders of the Kubernetes example must be refused at start-up, by name.
    """
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        raise SettingsError(
            f"{what}: {cert_file} and {key_file} are not a readable PEM certificate and its private key ({error})"
        ) from None


def _check_ca_file(ca_file: Path, what: str) -> None:
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise SettingsError(f"{what}: {ca_file} is not a readable PEM CA certificate bundle ({error})") from None


def server_credentials(settings: TierSettings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mutual TLS when a client CA is configured too."""
    label = settings.setting_label
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise SettingsError(
                f"{label('tls_client_ca_file')} needs {label('tls_cert_file')} and {label('tls_key_file')} "
                "(mutual TLS runs over TLS)"
            )
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise SettingsError(f"TLS needs both {label('tls_cert_file')} and {label('tls_key_file')}")
    _check_certificate_pair(settings.tls_cert_file, settings.tls_key_file, f"{label('tls_cert_file')} / key")
    if settings.tls_client_ca_file is not None:
        _check_ca_file(settings.tls_client_ca_file, label("tls_client_ca_file"))
    client_ca = _read(settings.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> grpc.ChannelCredentials:
    """Client TLS: the CA to trust (system roots if None) and, for mutual TLS, our certificate and key."""
    if (cert_file is None) != (key_file is None):
        raise SettingsError("a client certificate needs both its certificate file and its key file")
    if ca_file is not None:
        _check_ca_file(ca_file, "TLS CA file")
    if cert_file is not None and key_file is not None:
        _check_certificate_pair(cert_file, key_file, "TLS client certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
    )


def accepted_tokens(settings: TierSettings) -> frozenset[str]:
    """The bearer tokens from `auth_token` and `auth_tokens_file` (blank lines and # comments ignored); a placeholder
    or too short token is a `SettingsError`, so a server never starts accepting one."""
    tokens: set[str] = set()
    if settings.auth_token is not None:
        token = settings.auth_token.get_secret_value()
        check_bearer_token(token, settings.setting_label("auth_token"))
        tokens.add(token)
    if settings.auth_tokens_file is not None:
        for number, line in enumerate(settings.auth_tokens_file.read_text().splitlines(), start=1):
            if (token := line.strip()) and not token.startswith("#"):
                check_bearer_token(token, f"line {number} of {settings.setting_label('auth_tokens_file')}")
                tokens.add(token)
    return frozenset(tokens)


def bearer_denial(authorization: str | None, tokens: Iterable[bytes]) -> GktError | None:
    """None when `authorization` is `Bearer <an accepted token>`; otherwise why not: no token gives
    `UnauthenticatedError`, a token that is not accepted `PermissionDeniedError`. Compared in constant time."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():  # the scheme is case-insensitive in HTTP
        return UnauthenticatedError("missing 'authorization: Bearer <token>'")
    offered = credentials.strip().encode()
    if any(hmac.compare_digest(offered, token) for token in tokens):
        return None
    return PermissionDeniedError("the bearer token is not accepted")


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every call (health checks optionally exempt).

    No token: UNAUTHENTICATED. A token that is not accepted: PERMISSION_DENIED (raised as domain errors, which the
    error interceptor around this one logs and counts). Tokens are compared in constant time and never logged.
    """

    def __init__(self, tokens: frozenset[str], *, exempt_health: bool = True) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._exempt_health = exempt_health

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method or ""
        if self._exempt_health and method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        denial = self._check(details.invocation_metadata or ())
        handler = await continuation(details)
        if denial is None or handler is None:
            return handler

        if handler.response_streaming:

            async def deny_stream(
                request: object, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[object]:
                raise denial
                yield  # type: ignore[unreachable]  # an async generator, as streaming handlers are

            return grpc.unary_stream_rpc_method_handler(
                deny_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def deny(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            raise denial

        return grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def _check(self, metadata: tuple[tuple[str, str | bytes], ...]) -> GktError | None:
        values = [v for k, v in metadata if k == "authorization"]
        return bearer_denial(values[0] if values and isinstance(values[0], str) else None, self._tokens)


def server_interceptors(settings: TierSettings, metrics: GktMetrics) -> list[grpc.aio.ServerInterceptor]:
    """The error interceptor (outermost: it maps, logs and counts every failure), then token auth if configured."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor(metrics)]
    tokens = accepted_tokens(settings)
    if tokens:
        interceptors.append(TokenAuthInterceptor(tokens, exempt_health=settings.auth_exempt_health))
    return interceptors
