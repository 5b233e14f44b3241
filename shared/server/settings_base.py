"""The settings base both tiers share: env prefixes, the generated command line, common server knobs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting (never a secret's value)."""


class TierSettings(BaseSettings):
    """Settings read from the command line first, then `GKT_<TIER>_*` env vars, then the defaults."""

    model_config = SettingsConfigDict(
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        extra="ignore",
        validate_default=True,
    )

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to (0.0.0.0 for all interfaces).")
    port: int = Field(
        0, ge=0, le=65535, description="gRPC port; 0 picks a free one (logged and written to --ready-file)."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics HTTP endpoint; unset disables it, 0 picks one.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics endpoint binds to.")
    ready_file: Path | None = Field(
        None, description="When set, a JSON file with the bound ports is written here once the server is SERVING."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Write logs as one JSON object per line (for log collectors).")
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM: how long accepted requests get to finish before the server stops."
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message accepted or sent, and largest HTTP request body accepted, in bytes.",
    )
    max_concurrent_streams: int = Field(
        100, ge=1, description="Most concurrent RPCs on one client connection (HTTP/2 max concurrent streams)."
    )

    # Requests: limits and the defaults of unset sampling fields.
    max_prompt_chars: int = Field(32_000, ge=1, description="Longest prompt accepted, in characters.")
    default_temperature: float = Field(
        0.0, ge=0, le=2, description="Temperature when a request sets none (0 = greedy)."
    )
    default_top_p: float = Field(1.0, gt=0, le=1, description="top_p when a request sets none.")

    # Security (TLS, mutual TLS and bearer tokens); everything off by default for local use.
    tls_cert_file: Path | None = Field(None, description="Server certificate (PEM); with --tls-key-file turns on TLS.")
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of the server certificate.")
    tls_client_ca_file: Path | None = Field(
        None, description="CA bundle (PEM) for client certificates; when set, clients must present one (mutual TLS)."
    )
    auth_token: SecretStr | None = Field(
        None, description="A bearer token callers must send ('authorization: Bearer <token>'); unset: no token check."
    )
    auth_tokens_file: Path | None = Field(
        None, description="File of accepted bearer tokens, one per line (re-read on start); adds to --auth-token."
    )
    auth_exempt_health: bool = Field(
        True, description="Let health checks through without a token (for load balancers and Kubernetes probes)."
    )

    @classmethod
    def setting_label(cls, field: str) -> str:
        """How a user sets `field`: its flag and its env var, e.g. `--auth-token (GKT_EDGE_AUTH_TOKEN)`."""
        prefix = cls.model_config.get("env_prefix", "")
        return f"--{field.replace('_', '-')} ({prefix}{field.upper()})"

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> Self:
        """Parses `argv` (defaults to `sys.argv[1:]`) on top of the environment; `--help` documents every knob."""
        return CliApp.run(cls, cli_args=list(argv) if argv is not None else None)
