"""Secrets given as a value or as a file: one way to read them, stripped, never logged."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret from `value`, else from the first line of `file` (trailing white space dropped), else None."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        # Only the first line: a trailing newline or a comment line below must not become part of the token.
        lines = file.read_text().splitlines()
        return lines[0].strip() if lines else ""
    return None
