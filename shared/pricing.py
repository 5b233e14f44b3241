"""Token prices and cost: one place for both tiers, the edge's counterfactual and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, replace

# API providers bill prompt tokens served from their prefix cache at a discount; 10 % of the prompt price is the
# common rate, and the default here.
CACHED_PROMPT_SHARE = 0.1


@dataclass(frozen=True)
class TokenPrices:
    """One model's prices per 1,000 tokens, in any one currency."""

    prompt_per_1k: float
    generation_per_1k: float
    cached_prompt_per_1k: float

    @classmethod
    def of(cls, prompt_per_1k: float, generation_per_1k: float, cached_prompt_per_1k: float | None) -> TokenPrices:
        """Prices with the cached-prompt price defaulting to `CACHED_PROMPT_SHARE` of the prompt price."""
        cached = CACHED_PROMPT_SHARE * prompt_per_1k if cached_prompt_per_1k is None else cached_prompt_per_1k
        return cls(prompt_per_1k, generation_per_1k, cached)

    def cost(self, prompt_tokens: int, generation_tokens: int, cached_prompt_tokens: int = 0) -> float:
        """Cost of one request: `cached_prompt_tokens` of the prompt tokens came from a prefix cache."""
        cached = min(cached_prompt_tokens, prompt_tokens)
        return (
            (prompt_tokens - cached) * self.prompt_per_1k
            + cached * self.cached_prompt_per_1k
            + generation_tokens * self.generation_per_1k
        ) / 1000

    def without_cache_discount(self) -> TokenPrices:
        """The same prices with cached prompt tokens billed in full (the list-price view)."""
        return replace(self, cached_prompt_per_1k=self.prompt_per_1k)


@dataclass(frozen=True)
class Prices:
    """What the edge accounts: the teacher's and the student's prices."""

    teacher: TokenPrices
    student: TokenPrices

    def without_cache_discount(self) -> Prices:
        return Prices(self.teacher.without_cache_discount(), self.student.without_cache_discount())
