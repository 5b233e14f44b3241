"""Every knob of the edge service (env prefix `GKT_EDGE_`, same names as `gkt-edge --help`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.catalog import DEFAULT_STUDENT
from shared.llama.engine_settings import EngineSettings
from shared.pricing import Prices, TokenPrices
from shared.prompt_formats import PromptFormatSetting
from shared.protocol.domain import AcceptanceName, GuidancePolicy, PolicyKind
from shared.server.settings_base import TierSettings

_POLICY = GuidancePolicy()  # the domain's defaults


class EdgeSettings(TierSettings, EngineSettings):
    """Settings of `gkt-edge`."""

    model_config = SettingsConfigDict(env_prefix="GKT_EDGE_", cli_prog_name="gkt-edge")

    port: int = Field(50052, ge=0, le=65535, description="gRPC port apps call; 0 picks a free one.")
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, "
        "/health) on the same student; unset or `off`: off, 0 picks a free one. TLS and bearer tokens as for gRPC.",
    )
    http_host: str | None = Field(None, description="Address the HTTP API binds to (unset: the same as --host).")
    teacher_address: str = Field(
        "127.0.0.1:50051",
        description="The teacher's gRPC address: host:port, or a gRPC target such as dns:///teacher:50051 (a DNS "
        "name with several addresses is balanced round-robin).",
    )
    model: str = Field(
        DEFAULT_STUDENT,
        description="The student: a catalog name (`gkt models list`) or a GGUF file path.",
    )

    @field_validator("http_port", mode="before")
    @classmethod
    def _http_port_off(cls, value: object) -> object:
        # An image that turns the API on can have it turned off again from its environment (GKT_EDGE_HTTP_PORT=off).
        if isinstance(value, str) and value.strip().lower() in {"", "off", "none"}:
            return None
        return value

    prompt_format: PromptFormatSetting = Field(
        "auto",
        description="How chat messages are rendered for the student: 'auto' uses its chat template if it has one.",
    )
    chat_template_file: Path | None = Field(
        None,
        description="A Jinja chat template file that replaces the model's own (as vLLM's and llama.cpp's "
        "--chat-template); with prompt_format 'auto' it makes the model a chat model.",
    )

    # Request defaults and limits
    default_guidance_tokens: int = Field(
        40, ge=0, description="K when a request sets none (the paper's GSM8K setting)."
    )
    max_guidance_tokens: int = Field(
        512, ge=0, description="Largest K a request may ask for (a request's K is also clipped to its max_tokens)."
    )

    # The guidance policy a request gets when it sets none (see GuidancePolicy in proto/gkt/v1/edge.proto); the
    # defaults are the domain's (`_POLICY`), declared once there.
    guidance_policy: PolicyKind = Field(
        _POLICY.kind,
        description="'fixed' reads K teacher tokens; 'adaptive' stops the teacher once the student agrees; 'verify' "
        "reads K, then the teacher checks the student's drafts.",
    )
    adaptive_floor_tokens: int = Field(
        _POLICY.floor_tokens, ge=1, description="Adaptive: teacher tokens always read first."
    )
    adaptive_window: int = Field(
        _POLICY.window,
        ge=1,
        description="Adaptive: latest guidance tokens (student's tokenizer) the agreement is judged on.",
    )
    adaptive_min_top1_fraction: float = Field(
        _POLICY.min_top1_fraction,
        ge=0,
        le=1,
        description="Adaptive: share of the window the student must have predicted as its top choice.",
    )
    adaptive_min_mean_logprob: float = Field(
        _POLICY.min_mean_logprob,
        description="Adaptive: least mean log-probability (nats) the student must give the window's tokens.",
    )
    escalate: bool = Field(
        _POLICY.escalate,
        description="Fixed and adaptive: ask the teacher for a burst of guidance when the student grows unsure.",
    )
    escalation_entropy_threshold: float = Field(
        _POLICY.entropy_threshold, ge=0, description="Escalation: next-token entropy (nats) that counts as unsure."
    )
    escalation_entropy_run: int = Field(
        _POLICY.entropy_run, ge=1, description="Escalation: unsure tokens in a row that trigger a burst."
    )
    escalation_max_bursts: int = Field(_POLICY.max_bursts, ge=0, description="Escalation: most bursts per answer.")
    escalation_burst_tokens: int = Field(
        _POLICY.burst_tokens, ge=1, description="Escalation: teacher tokens per burst."
    )

    verify_draft_tokens: int = Field(
        _POLICY.draft_tokens, ge=1, le=64, description="Verify: student tokens per draft the teacher checks."
    )
    verify_acceptance: AcceptanceName = Field(
        _POLICY.acceptance,
        description="Verify: 'strict' keeps the teacher's top choices only; 'min_teacher_prob' a token it gives at "
        "least verify_min_teacher_prob; 'speculative' samples (temperature > 0).",
    )
    verify_min_teacher_prob: float = Field(
        _POLICY.min_teacher_prob, gt=0, le=1, description="Verify, min_teacher_prob: the least teacher probability."
    )
    verify_draft_min_prob: float = Field(
        _POLICY.draft_min_prob,
        ge=0,
        le=1,
        description="Verify: end a draft early where the student's probability drops below this (0: off).",
    )
    verify_correction_tokens: int = Field(
        _POLICY.correction_tokens, ge=1, le=64, description="Verify: teacher tokens per correction."
    )

    @model_validator(mode="after")
    def _escalation_is_adaptive(self) -> EdgeSettings:
        # Under verify the teacher checks every draft already; an edge set up for both is told so at start.
        if self.guidance_policy == "verify" and self.escalate:
            raise ValueError("escalate applies to the adaptive policy; verify has the teacher check every draft")
        return self

    def default_policy(self) -> GuidancePolicy:
        return GuidancePolicy(
            kind=self.guidance_policy,
            floor_tokens=self.adaptive_floor_tokens,
            window=self.adaptive_window,
            min_top1_fraction=self.adaptive_min_top1_fraction,
            min_mean_logprob=self.adaptive_min_mean_logprob,
            escalate=self.escalate,
            entropy_threshold=self.escalation_entropy_threshold,
            entropy_run=self.escalation_entropy_run,
            max_bursts=self.escalation_max_bursts,
            burst_tokens=self.escalation_burst_tokens,
            draft_tokens=self.verify_draft_tokens,
            acceptance=self.verify_acceptance,
            min_teacher_prob=self.verify_min_teacher_prob,
            draft_min_prob=self.verify_draft_min_prob,
            correction_tokens=self.verify_correction_tokens,
        )

    default_max_tokens: int = Field(
        256,
        ge=1,
        description="max_tokens when a request sets none: the most tokens of the whole answer (guidance + student, "
        "in the student's tokenizer), in every mode; K is clipped to it.",
    )
    max_tokens_limit: int = Field(1024, ge=1, description="Largest max_tokens (whole answer) a request may ask for.")

    # Guidance deadlines: past them the edge answers with what it has and marks the answer degraded.
    guidance_first_token_timeout_seconds: float = Field(
        10.0, gt=0, description="Most time to wait for the teacher's first guidance text."
    )
    guidance_timeout_seconds: float = Field(30.0, gt=0, description="Most time to wait for the whole guidance.")
    teacher_only_timeout_seconds: float = Field(
        300.0, gt=0, description="Most time to wait for the teacher's whole answer in teacher-only mode."
    )

    # Connection to the teacher: TLS / mutual TLS / token, and a circuit breaker.
    teacher_tls: bool = Field(
        False, description="Connect to the teacher over TLS (system CAs unless --teacher-tls-ca-file)."
    )
    teacher_tls_ca_file: Path | None = Field(None, description="CA bundle (PEM) that signed the teacher's certificate.")
    teacher_tls_cert_file: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS with the teacher."
    )
    teacher_tls_key_file: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    teacher_tls_server_name: str | None = Field(
        None, description="Name to check the teacher's certificate against, if not the host in --teacher-address."
    )
    teacher_auth_token: SecretStr | None = Field(None, description="Bearer token the edge sends to the teacher.")
    teacher_auth_token_file: Path | None = Field(None, description="File holding the bearer token for the teacher.")
    breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive teacher failures that open the circuit breaker (answers go degraded at once)."
    )
    breaker_reset_seconds: float = Field(
        10.0, gt=0, description="How long the breaker stays open before one trial request is let through."
    )

    # Accounting (prices per 1,000 tokens, one currency for all)
    teacher_price_prompt_per_1k: float = Field(0.0015, ge=0, description="Price of 1,000 teacher prompt tokens.")
    teacher_price_cached_prompt_per_1k: float | None = Field(
        None,
        ge=0,
        description="Price of 1,000 teacher prompt tokens served from its prefix cache (unset: 10 % of the prompt "
        "price, as API providers discount cached input).",
    )
    teacher_price_generation_per_1k: float = Field(0.002, ge=0, description="Price of 1,000 teacher generated tokens.")
    student_price_prompt_per_1k: float = Field(0.0001, ge=0, description="Price of 1,000 student prompt tokens.")
    student_price_cached_prompt_per_1k: float | None = Field(
        None, ge=0, description="Price of 1,000 student prompt tokens reused from its prefix cache (unset: 10 %)."
    )
    student_price_generation_per_1k: float = Field(0.0002, ge=0, description="Price of 1,000 student generated tokens.")

    def prices(self) -> Prices:
        return Prices(
            teacher=TokenPrices.of(
                self.teacher_price_prompt_per_1k,
                self.teacher_price_generation_per_1k,
                self.teacher_price_cached_prompt_per_1k,
            ),
            student=TokenPrices.of(
                self.student_price_prompt_per_1k,
                self.student_price_generation_per_1k,
                self.student_price_cached_prompt_per_1k,
            ),
        )
