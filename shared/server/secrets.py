"""Secrets given as a value or as a file: one way to read them, stripped, never logged; weak tokens refused."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.server.settings_base import SettingsError

# A bearer token shorter than this is guessable, or a test value that slipped into a deployment.
MIN_TOKEN_CHARS = 16
# The mark of the examples' placeholders (deploy/k8s/secrets.yaml): a deployment must not run with one.
PLACEHOLDER_MARK = "change-me"


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret from `value`, else from the first line of `file` (trailing white space dropped), else None."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        # Only the first line: a trailing newline or a comment line below must not become part of the token.
        lines = file.read_text().splitlines()
        return lines[0].strip() if lines else ""
    return None


def check_bearer_token(token: str, setting: str) -> None:
    """Raises `SettingsError` naming `setting` (not the token) if `token` is a placeholder or too short."""
    if PLACEHOLDER_MARK in token.lower():
        raise SettingsError(
            f"{setting} holds the example placeholder token (it contains 'CHANGE-ME'); "
            "set a long random token, e.g. `openssl rand -hex 32`"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(
            f"{setting} holds a bearer token of {len(token)} characters; at least {MIN_TOKEN_CHARS} are required "
            "(e.g. `openssl rand -hex 32`)"
        )


def read_bearer_token(
    value: SecretStr | None, file: Path | None, *, value_setting: str, file_setting: str
) -> str | None:
    """`read_secret` for a bearer token, checked with `check_bearer_token` against the setting it came from."""
    token = read_secret(value, file)
    if token is not None:
        check_bearer_token(token, value_setting if value is not None else file_setting)
    return token
