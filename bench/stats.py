"""Intervals and paired tests for the benchmark's success rates (issue 20: a rate without its seed count and
interval decided a headline once).

- `wilson(k, n)`: the 95 % Wilson score interval of a rate k/n (sound at 0 and n, where the normal one collapses);
- `mcnemar(a, b)`: the exact McNemar test of two methods run on the SAME seeds (paired successes): under "equally
  good" each discordant seed (one passes, the other fails) goes either way with probability 1/2, so the two-sided p
  is the binomial tail of the smaller discordant count, doubled (capped at 1).
"""
import math

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def wilson(successes, n, z=Z95):
    """(low, high) of the Wilson score interval of successes / n; (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a, b):
    """Exact two-sided McNemar p-value of paired booleans a, b (same seeds, same order); with the discordant
    counts: returns (p, a_only, b_only)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"mcnemar: the two methods need the same seeds (got {len(a)} and {len(b)} results)")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    if n == 0:
        return 1.0, 0, 0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail), a_only, b_only


def rate(successes, n):
    """'62% [43, 78] of 32': a success rate with its 95 % Wilson interval and the seed count."""
    low, high = wilson(successes, n)
    return f"{100 * successes / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}] of {n}" if n else "n/a"
