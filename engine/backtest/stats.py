"""Significance of backtest results: stationary block bootstrap of Sharpe ratios, paired against a benchmark.

Daily returns are autocorrelated in their volatility, so resampling single days understates the spread of a
Sharpe ratio. The stationary bootstrap (Politis & Romano, 1994) resamples blocks of geometric length (mean
``block``) with wrap-around, which keeps short-range dependence. The same resampled indices are applied to the
strategy and the benchmark, so the difference of their Sharpe ratios is tested on paired data.

The p-value tests H0: Sharpe(strategy) <= Sharpe(benchmark) against H1: it is larger, by the centred bootstrap
(the resampled differences shifted to mean zero under H0, as in Ledoit & Wolf, 2008, without their HAC
studentisation): ``p = (1 + #{d_b - d >= d}) / (B + 1)`` where ``d`` is the observed difference.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def block_bootstrap_indices(n: int, resamples: int, block: float, seed: int) -> list[list[int]]:
    """``resamples`` index lists of length ``n``: stationary-bootstrap blocks of mean length ``block``."""
    if n <= 0:
        return []
    rng = random.Random(seed)
    p_new = 1.0 / max(block, 1.0)
    out = []
    for _ in range(resamples):
        idx = []
        i = rng.randrange(n)
        for _ in range(n):
            idx.append(i)
            i = rng.randrange(n) if rng.random() < p_new else (i + 1) % n
        out.append(idx)
    return out


def _sharpe(values: Sequence[float], per_year: float) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    if var <= 0.0:
        return None
    return mean / math.sqrt(var) * math.sqrt(per_year)


@dataclass(frozen=True, slots=True)
class SharpeTest:
    """A Sharpe ratio with its bootstrap interval and, against a benchmark, the one-sided p-value."""

    sharpe: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    resamples: int


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def sharpe_test(
    returns: Sequence[float],
    per_year: float,
    indices: Sequence[Sequence[int]],
    *,
    benchmark: Sequence[float] | None = None,
    level: float = 0.95,
) -> SharpeTest:
    """The Sharpe ratio of ``returns`` with a ``level`` percentile interval over the resamples ``indices``
    (from :func:`block_bootstrap_indices`), and the p-value against ``benchmark`` (same bars) if given.

    Resamples where a Sharpe ratio is undefined (no variance: a strategy that never traded) are left out; with
    none left the interval is ``None``.
    """
    observed = _sharpe(returns, per_year)
    if benchmark is not None and len(benchmark) != len(returns):
        raise ValueError(f"benchmark has {len(benchmark)} returns, the strategy {len(returns)}")
    draws: list[float] = []
    diffs: list[float] = []
    for idx in indices:
        s = _sharpe([returns[i] for i in idx], per_year)
        if s is None:
            continue
        draws.append(s)
        if benchmark is not None:
            b = _sharpe([benchmark[i] for i in idx], per_year)
            if b is not None:
                diffs.append(s - b)
    if not draws:
        return SharpeTest(observed, None, None, None, len(indices))
    draws.sort()
    alpha = (1.0 - level) / 2.0
    p_value = None
    if benchmark is not None and observed is not None and diffs:
        base = _sharpe(benchmark, per_year)
        if base is not None:
            d = observed - base
            mean_diff = math.fsum(diffs) / len(diffs)
            # Centre the bootstrap distribution on H0 (difference 0) and count draws at least as extreme.
            extreme = sum(x - mean_diff >= d for x in diffs)
            p_value = (1 + extreme) / (len(diffs) + 1)
    return SharpeTest(observed, _percentile(draws, alpha), _percentile(draws, 1.0 - alpha), p_value, len(indices))
