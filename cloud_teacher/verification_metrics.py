"""The teacher's metrics of teacher-verified drafting (`Verify`), on the server's registry, named as in metrics.py."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import TTFT_BUCKETS, GktMetrics
from shared.protocol.verification import AcceptanceRule, VerifyResult


class VerificationMetrics:
    """Counts verifications and their tokens; token spend and cost also go to the tier's usual counters."""

    def __init__(self, metrics: GktMetrics) -> None:
        self._metrics = metrics
        r, t = metrics.registry, ("tier",)
        self.requests = Counter(
            "gkt_verification_requests", "Draft verifications served, by acceptance rule.", (*t, "rule"), registry=r
        )
        self.scored_tokens = Counter(
            "gkt_verification_scored_tokens", "Draft tokens the teacher scored (its own tokenizer).", t, registry=r
        )
        self.accepted_tokens = Counter(
            "gkt_verification_accepted_tokens", "Scored draft tokens the teacher accepted.", t, registry=r
        )
        self.correction_tokens = Counter(
            "gkt_verification_correction_tokens",
            "Tokens the teacher wrote into answers while verifying (corrections, bonus tokens, bursts).",
            t,
            registry=r,
        )
        self.cached_prompt_tokens = Counter(
            "gkt_verification_cached_prompt_tokens",
            "Prompt tokens of verifications read from the prefix cache (not recomputed).",
            t,
            registry=r,
        )
        self.passes = Counter(
            "gkt_verification_passes",
            "Engine requests verifications took (more than one per verification: a burst or a recomputed pass).",
            t,
            registry=r,
        )
        self.latency = Histogram(
            "gkt_verification_latency_seconds",
            "Time from receiving a verification to its answer.",
            t,
            buckets=TTFT_BUCKETS,
            registry=r,
        )

    def observe(self, rule: AcceptanceRule, result: VerifyResult, seconds: float) -> None:
        tier = self._metrics.tier
        usage = result.usage
        self.requests.labels(tier, rule).inc()
        self.scored_tokens.labels(tier).inc(usage.scored_tokens)
        self.accepted_tokens.labels(tier).inc(result.accepted_tokens)
        self.correction_tokens.labels(tier).inc(usage.generated_tokens)
        self.cached_prompt_tokens.labels(tier).inc(usage.cached_prompt_tokens)
        self.passes.labels(tier).inc(usage.passes)
        self.latency.labels(tier).observe(seconds)
