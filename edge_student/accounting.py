"""Counts each edge answer into the metrics: tokens per tier, cost per tier and the teacher-only counterfactual."""

from __future__ import annotations

from shared.metrics import Api, GktMetrics
from shared.pricing import Prices
from shared.protocol.domain import Answer


def teacher_only_cost(answer: Answer, prices: Prices) -> float:
    """What this answer would have cost had the teacher written all of it.

    The teacher's prompt is the real prompt of its first call (and its real prefix-cache hits) when it was called,
    else the student's prompt without the guidance, with the share of it the student's own prefix cache served; the
    answer's length is counted in the tokens each model actually spent on it (student tokens standing in for the
    teacher's on the student's part).
    """
    usage = answer.usage
    checks = answer.verification
    # Bursts and verifications re-read the prompt and the answer so far: real spend, but a teacher-only answer reads
    # the prompt once.
    reread = sum(burst.prompt_tokens for burst in answer.bursts) + (checks.teacher_prompt_tokens if checks else 0)
    reread_cached = sum(burst.cached_prompt_tokens for burst in answer.bursts) + (
        checks.teacher_cached_prompt_tokens if checks else 0
    )
    if usage.teacher_prompt_tokens > reread:
        prompt = usage.teacher_prompt_tokens - reread
        cached = usage.teacher_cached_prompt_tokens - reread_cached
    else:
        prompt = usage.student_prompt_tokens - usage.student_guidance_tokens
        share = usage.student_cached_prompt_tokens / usage.student_prompt_tokens if usage.student_prompt_tokens else 0
        cached = round(prompt * share)
    generated = usage.teacher_completion_tokens + usage.student_completion_tokens
    if checks is not None:  # rejected drafts are not part of the answer: its own length stands in for the teacher's
        generated = usage.completion_tokens
    return prices.teacher.cost(prompt, generated, cached)


def account_answer(metrics: GktMetrics, answer: Answer, prices: Prices, *, api: Api) -> None:
    """Records one finished answer (`api`: the door it came through); every number comes from the answer's own usage
    and timings."""
    tier, mode, usage, timings = metrics.tier, answer.mode, answer.usage, answer.timings
    output_tokens = usage.teacher_completion_tokens + usage.student_completion_tokens
    metrics.observe_latency(
        mode,
        api=api,
        ttft=timings.time_to_first_token_seconds,
        total=timings.total_seconds,
        output_tokens=output_tokens,
    )
    metrics.prompt_tokens.labels(tier, mode).inc(usage.student_prompt_tokens)
    metrics.generation_tokens.labels(tier, mode).inc(usage.student_completion_tokens)
    metrics.guidance_tokens.labels(tier, mode).inc(usage.teacher_completion_tokens)
    if answer.guidance_end is not None:
        read = usage.teacher_completion_tokens - sum(burst.teacher_tokens for burst in answer.bursts)
        metrics.guidance_tokens_used.labels(tier).observe(read)
        if answer.guidance_end == "student_agreed":
            metrics.guidance_stopped_early.labels(tier).inc()
            metrics.guidance_tokens_saved.labels(tier).inc(max(0, answer.guidance_tokens - read))
    metrics.escalations.labels(tier).inc(len(answer.bursts))
    if answer.verification is not None:
        checks = answer.verification
        metrics.verification_rounds.labels(tier).inc(checks.rounds)
        metrics.draft_tokens.labels(tier).inc(checks.draft_tokens)
        metrics.draft_tokens_accepted.labels(tier).inc(checks.accepted_tokens)
        metrics.verification_corrected_tokens.labels(tier).inc(checks.corrected_tokens)
        metrics.teacher_scored_tokens.labels(tier).inc(checks.teacher_scored_tokens)
        if checks.draft_tokens:
            metrics.draft_acceptance_rate.labels(tier).observe(checks.acceptance_rate)
    metrics.prefix_cache_queries.labels(tier).inc(usage.student_prompt_tokens)
    metrics.prefix_cache_hits.labels(tier).inc(usage.student_cached_prompt_tokens)
    metrics.cost.labels(tier, "teacher", mode).inc(
        prices.teacher.cost(
            usage.teacher_prompt_tokens, usage.teacher_completion_tokens, usage.teacher_cached_prompt_tokens
        )
    )
    metrics.cost.labels(tier, "student", mode).inc(
        prices.student.cost(
            usage.student_prompt_tokens, usage.student_completion_tokens, usage.student_cached_prompt_tokens
        )
    )
    metrics.teacher_only_cost.labels(tier, mode).inc(teacher_only_cost(answer, prices))
    metrics.count_success(mode, answer.finish_reason, api=api)
    if answer.degraded_reason is not None:
        metrics.degraded_requests.labels(tier, answer.degraded_reason).inc()
    if usage.student_prompt_tokens:
        metrics.request_queue_time.labels(tier).observe(timings.student_queue_seconds)
        metrics.request_prefill_time.labels(tier).observe(timings.student_prefill_seconds)
        metrics.request_decode_time.labels(tier).observe(timings.student_decode_seconds)
    if timings.guidance_wait_seconds:
        metrics.guidance_wait_time.labels(tier).observe(timings.guidance_wait_seconds)
