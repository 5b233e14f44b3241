"""The statistics of the benchmark tables: Wilson intervals, exact McNemar tests and paired bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959963984540054  # the standard normal quantile of 0.975: two-sided 95 %
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same results file always gives the same intervals
Interval = tuple[float, float]


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """The Wilson score interval of a proportion `successes / n` (95 % by default; (0, 1) when n is 0).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n successes, which matters at
    the sizes these runs have.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exactly 0 and 1 at the ends (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value for paired outcomes: `b` and `c` are the discordant pairs (right in one
    setting only, and in the other only). Under the null each discordant pair goes either way with probability 1/2,
    so the p-value is twice the smaller binomial tail, at most 1 (1 when there are no discordant pairs)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_ratio_of_sums(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    z: float = Z_95,
) -> Interval | None:
    """A paired percentile bootstrap interval of `sum(numerator) / sum(denominator)`: questions are resampled with
    replacement and each resample keeps both values of a question together (the pairing). None when the ratio is
    undefined (no questions, lengths differ, or a zero denominator in the data)."""
    if not numerator or len(numerator) != len(denominator) or sum(denominator) == 0:
        return None
    top, bottom = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(top), size=(resamples, len(top)))
    bottoms = bottom[picks].sum(axis=1)
    ratios = top[picks].sum(axis=1)[bottoms != 0] / bottoms[bottoms != 0]
    if ratios.size == 0:
        return None
    tail = 100 * (1 - _coverage(z)) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return (float(low), float(high))


def scaled_interval(point: float | None, proxy: float | None, proxy_interval: Interval | None) -> Interval | None:
    """The interval of a ratio that has no per-question values (a wall-time ratio of a concurrent run), borrowed
    from a per-question proxy of it: `point` times the proxy's interval relative to the proxy's own value."""
    if point is None or not proxy or proxy_interval is None:
        return None
    return (point * proxy_interval[0] / proxy, point * proxy_interval[1] / proxy)


def _coverage(z: float) -> float:
    """The two-sided coverage of a normal quantile (0.95 for 1.96)."""
    return math.erf(z / math.sqrt(2))
