"""Performance metrics of an equity curve, as plain functions of plain numbers.

Conventions: simple per-bar returns; the risk-free rate is zero; sample standard deviation
(``ddof=1``); annualisation by the number of bars in a 365-day year (crypto trades every day).
A metric that is undefined for the input (too few points, zero variance) is ``None``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from engine.events import Interval

YEAR_MS = 365 * 86_400_000


def periods_per_year(interval: Interval) -> float:
    """Bars per year: 365 for daily bars, 525,600 for one-minute bars."""
    return YEAR_MS / interval.ms


def period_returns(equity: Sequence[float]) -> list[float]:
    """Simple returns between consecutive equity points."""
    return [b / a - 1.0 for a, b in itertools.pairwise(equity)]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stdev(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def annualised_volatility(returns: Sequence[float], per_year: float) -> float | None:
    std = _stdev(returns)
    return None if std is None else std * math.sqrt(per_year)


def sharpe(returns: Sequence[float], per_year: float) -> float | None:
    """``mean / stdev * sqrt(per_year)``; ``None`` with fewer than two returns or zero variance."""
    std = _stdev(returns)
    if std is None or std == 0.0:
        return None
    return _mean(returns) / std * math.sqrt(per_year)


def sortino(returns: Sequence[float], per_year: float) -> float | None:
    """``mean / downside deviation * sqrt(per_year)``, target 0.

    The downside deviation is ``sqrt(mean(min(r, 0)^2))`` over *all* returns; ``None`` when no
    return is negative.
    """
    if len(returns) < 2:
        return None
    downside = math.sqrt(math.fsum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    if downside == 0.0:
        return None
    return _mean(returns) / downside * math.sqrt(per_year)


def cagr(start_equity: float, end_equity: float, elapsed_ms: int) -> float | None:
    """Compound annual growth over ``elapsed_ms``; ``None`` for no time or a wiped-out account."""
    if elapsed_ms <= 0 or start_equity <= 0 or end_equity <= 0:
        return None
    return (end_equity / start_equity) ** (YEAR_MS / elapsed_ms) - 1.0


@dataclass(frozen=True, slots=True)
class Drawdown:
    """The deepest peak-to-trough fall, as indices into the equity curve.

    ``duration`` counts bars from the peak until equity is back at the peak, or until the last
    point when it never recovers (``recovery`` is then ``None``).
    """

    depth: float
    peak: int
    trough: int
    recovery: int | None
    duration: int


def max_drawdown(equity: Sequence[float]) -> Drawdown:
    """The maximum drawdown (a positive fraction: 0.25 is a 25% fall) and its duration."""
    if not equity:
        return Drawdown(0.0, 0, 0, 0, 0)
    peak_index = best_peak = best_trough = 0
    depth = 0.0
    for i, value in enumerate(equity):
        if value >= equity[peak_index]:  # a flat top: the drawdown starts at its last bar
            peak_index = i
        fall = 1.0 - value / equity[peak_index] if equity[peak_index] > 0 else 0.0
        if fall > depth:
            depth, best_peak, best_trough = fall, peak_index, i
    if depth == 0.0:
        return Drawdown(0.0, 0, 0, 0, 0)
    recovery = next((i for i in range(best_trough + 1, len(equity)) if equity[i] >= equity[best_peak]), None)
    end = recovery if recovery is not None else len(equity) - 1
    return Drawdown(depth, best_peak, best_trough, recovery, end - best_peak)


def drawdown_series(equity: Sequence[float]) -> list[float]:
    """The fall from the running peak at every point (0 at new highs), for plotting."""
    out = []
    peak = -math.inf
    for value in equity:
        peak = max(peak, value)
        out.append(1.0 - value / peak if peak > 0 else 0.0)
    return out


def turnover(traded_notional: float, equity: Sequence[float]) -> float:
    """Total traded notional over the mean equity: how many times the account was traded through."""
    return traded_notional / _mean(equity) if equity else 0.0


def win_rate(pnls: Sequence[float]) -> float | None:
    """Share of closed trades with a positive P&L after costs; ``None`` with no trades."""
    return sum(p > 0 for p in pnls) / len(pnls) if pnls else None


def profit_factor(pnls: Sequence[float]) -> float | None:
    """Gross profit over gross loss; ``None`` when there is no losing trade (it would be infinite)."""
    loss = -math.fsum(p for p in pnls if p < 0)
    if loss == 0.0:
        return None
    return math.fsum(p for p in pnls if p > 0) / loss
