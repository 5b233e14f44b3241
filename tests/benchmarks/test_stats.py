"""The benchmark statistics against known values: Wilson intervals, exact McNemar p-values, paired bootstrap."""

from __future__ import annotations

import pytest

from benchmarks.stats import bootstrap_ratio_of_sums, mcnemar_exact, scaled_interval, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (6, 20, 0.1455, 0.5190),  # p = 0.30 at n = 20
        (0, 10, 0.0, 0.2775),  # not empty at zero successes, unlike the normal approximation
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Table I, example "81/263"
    ],
)
def test_wilson_interval_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, n)
    assert interval == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0  # exactly, not up to rounding
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    # Narrower with more questions at the same proportion.
    small, large = wilson_interval(12, 20), wilson_interval(120, 200)
    assert large[1] - large[0] < small[1] - small[0]


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 8, 0.0390625),  # 2 * (1 + 9) / 2**9
        (8, 1, 0.0390625),  # symmetric
        (0, 5, 0.0625),  # 2 / 2**5
        (3, 3, 1.0),  # capped at 1
        (0, 0, 1.0),  # no discordant pair: no evidence either way
        (10, 25, 0.01667),  # a larger table: 2 * P(X <= 10), X ~ Binomial(35, 1/2)
    ],
)
def test_exact_mcnemar_p_values(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=5e-5)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 2)


def test_paired_bootstrap_keeps_each_questions_pair_together() -> None:
    # Every question's numerator is exactly twice its denominator: any paired resample gives exactly 2, however
    # much the questions differ from each other (an unpaired resample would not).
    denominator = [1.0, 5.0, 20.0, 3.0, 60.0, 2.0]
    numerator = [2 * value for value in denominator]
    assert bootstrap_ratio_of_sums(numerator, denominator) == pytest.approx((2.0, 2.0))


def test_paired_bootstrap_is_reproducible_and_covers_the_ratio() -> None:
    numerator = [1.0, 2.0, 0.5, 3.0, 1.5, 2.5, 0.8, 1.2, 2.2, 0.9]
    denominator = [2.0, 1.0, 1.5, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 1.5]
    first = bootstrap_ratio_of_sums(numerator, denominator)
    assert first is not None and first == bootstrap_ratio_of_sums(numerator, denominator)  # fixed seed
    low, high = first
    assert low < sum(numerator) / sum(denominator) < high
    assert bootstrap_ratio_of_sums(numerator, denominator, seed=1) != first
    # More questions of the same kind: a narrower interval.
    wide = bootstrap_ratio_of_sums(numerator * 10, denominator * 10)
    assert wide is not None and wide[1] - wide[0] < high - low


def test_paired_bootstrap_undefined_cases() -> None:
    assert bootstrap_ratio_of_sums([], []) is None
    assert bootstrap_ratio_of_sums([1.0], [1.0, 2.0]) is None
    assert bootstrap_ratio_of_sums([1.0, 2.0], [0.0, 0.0]) is None


def test_scaled_interval_borrows_the_relative_width_of_a_proxy() -> None:
    assert scaled_interval(2.0, 4.0, (3.0, 6.0)) == pytest.approx((1.5, 3.0))
    assert scaled_interval(None, 4.0, (3.0, 6.0)) is None
    assert scaled_interval(2.0, 0.0, (3.0, 6.0)) is None
    assert scaled_interval(2.0, 4.0, None) is None
