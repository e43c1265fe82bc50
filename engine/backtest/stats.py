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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Resamples drawn and scored per step: bounds memory at (chunk x bars) for minute bars (43,200 per month).
_CHUNK = 64


@dataclass(frozen=True, slots=True)
class BootstrapPlan:
    """How to resample ``n`` per-bar returns: the same plan (and seed) gives the same resampled bars to every
    series of a symbol, which is what pairs a strategy with its benchmark."""

    n: int
    resamples: int
    block: float
    seed: int

    def chunks(self) -> list[np.ndarray]:
        """The resampled indices, ``(rows, n)`` arrays of stationary-bootstrap blocks with wrap-around."""
        rng = np.random.default_rng(self.seed)
        p_new = 1.0 / max(self.block, 1.0)
        pos = np.arange(self.n)
        out = []
        for done in range(0, self.resamples, _CHUNK):
            rows = min(_CHUNK, self.resamples - done)
            new = rng.random((rows, self.n)) < p_new
            new[:, 0] = True
            starts = rng.integers(0, self.n, size=(rows, self.n))
            # The position where the block holding t began; t continues that block's run of bars.
            began = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
            out.append((np.take_along_axis(starts, began, axis=1) + (pos - began)) % self.n)
        return out


def block_bootstrap_indices(n: int, resamples: int, block: float, seed: int) -> BootstrapPlan:
    """The resampling plan for ``n`` returns: ``resamples`` stationary-bootstrap draws, mean block ``block``."""
    return BootstrapPlan(n, resamples, block, seed)


def _sharpes(values: np.ndarray, per_year: float) -> np.ndarray:
    """Sharpe ratio of each row; NaN where a row has no variance."""
    std = values.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = values.mean(axis=1) / std * math.sqrt(per_year)
    return np.where(std > 0, out, np.nan)


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


def sharpe_test(
    returns: Sequence[float],
    per_year: float,
    plan: BootstrapPlan,
    *,
    benchmark: Sequence[float] | None = None,
    level: float = 0.95,
) -> SharpeTest:
    """The Sharpe ratio of ``returns`` with a ``level`` percentile interval over the resamples of ``plan``, and
    the p-value against ``benchmark`` (same bars) if given.

    Resamples where a Sharpe ratio is undefined (no variance: a strategy that never traded) are left out; with
    none left the interval is ``None``.
    """
    observed = _sharpe(returns, per_year)
    if len(returns) != plan.n:
        raise ValueError(f"the plan resamples {plan.n} returns, the strategy has {len(returns)}")
    if benchmark is not None and len(benchmark) != len(returns):
        raise ValueError(f"benchmark has {len(benchmark)} returns, the strategy {len(returns)}")
    series = np.asarray(returns, dtype=np.float64)
    base_series = None if benchmark is None else np.asarray(benchmark, dtype=np.float64)
    draws_parts, diff_parts = [], []
    for idx in plan.chunks() if plan.n else []:
        s = _sharpes(series[idx], per_year)
        draws_parts.append(s)
        if base_series is not None:
            diff_parts.append(s - _sharpes(base_series[idx], per_year))
    draws = np.concatenate(draws_parts) if draws_parts else np.zeros(0)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return SharpeTest(observed, None, None, None, plan.resamples)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    p_value = None
    if benchmark is not None and observed is not None and diff_parts:
        diffs = np.concatenate(diff_parts)
        diffs = diffs[np.isfinite(diffs)]
        base = _sharpe(benchmark, per_year)
        if base is not None and diffs.size:
            d = observed - base
            # Centre the bootstrap distribution on H0 (difference 0) and count draws at least as extreme.
            extreme = int(np.sum(diffs - diffs.mean() >= d))
            p_value = (1 + extreme) / (diffs.size + 1)
    return SharpeTest(observed, float(low), float(high), p_value, plan.resamples)
