"""Bearer tokens on the HTTP door: the gRPC side's tokens, checked by the same function."""

from __future__ import annotations

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser
from starlette.requests import HTTPConnection

from edge_student.openai_http.paths import HEALTH_PATH
from shared.protocol.errors import GktError
from shared.server.security import bearer_denial


class DeniedError(AuthenticationError):
    """Carries the domain error (401 or 403) through Starlette's authentication middleware."""

    def __init__(self, error: GktError) -> None:
        super().__init__(str(error))
        self.error = error


class BearerTokens(AuthenticationBackend):
    """The gRPC side's bearer tokens, checked by the same function; health optionally exempt, as on gRPC."""

    def __init__(self, tokens: frozenset[str], *, exempt_health: bool) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._exempt_health = exempt_health

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        if self._exempt_health and conn.url.path == HEALTH_PATH:
            return None
        denial = bearer_denial(conn.headers.get("authorization"), self._tokens)
        if denial is not None:
            raise DeniedError(denial)
        return AuthCredentials(["authenticated"]), SimpleUser("bearer")
