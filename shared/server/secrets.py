"""Secrets given as a value or as a file: one way to read them, stripped, never logged."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret from `value`, else from the first line of `file` (trailing white space dropped), else None."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return None
