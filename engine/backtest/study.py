"""A backtest study: several symbols and policies side by side, walk-forward folds, bootstrap significance.

Each (symbol, policy) pair is one :func:`engine.backtest.run_backtest` over the whole traded period, through the
same runtime and broker as a single backtest; only the engine's policy differs. The traded period is cut into
``folds`` consecutive, equally long folds. A policy that learns (``direction``) is trained before each fold only
on data that ended before the fold started, and decides inside that fold with that model, so every fold is out of
sample. The per-fold figures slice the one equity curve at the fold boundaries (a position open at a boundary
carries over, as it would live).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.backtest import metrics
from engine.backtest.runner import BacktestResult, EquityPoint
from engine.backtest.stats import BootstrapPlan, block_bootstrap_indices, sharpe_test
from engine.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: decisions at bar closes in ``(start_ms, end_ms]`` (the first fold includes its start)."""

    index: int
    start_ms: int
    end_ms: int


def walk_forward_folds(start_ms: int, end_ms: int, folds: int, bar_ms: int) -> list[Fold]:
    """``folds`` consecutive folds of (nearly) equal length over ``[start_ms, end_ms]``, cut at bar boundaries."""
    if folds < 1:
        raise InvalidInput(f"--folds must be at least 1, got {folds}")
    bars = (end_ms - start_ms) // bar_ms
    if bars < 2 * folds:
        raise InvalidInput(f"{bars} bar(s) between start and end are too few for {folds} fold(s) (2 bars each)")
    cuts = [start_ms + (bars * k // folds) * bar_ms for k in range(folds)] + [end_ms]
    return [Fold(k, cuts[k], cuts[k + 1]) for k in range(folds)]


@dataclass(frozen=True, slots=True)
class StudyRun:
    """One finished (symbol, policy) backtest."""

    symbol: str
    policy: str
    result: BacktestResult


def _fold_points(points: Sequence[EquityPoint], fold: Fold, first: bool) -> list[EquityPoint]:
    """The points of ``fold`` preceded by the last point before it (the base its first return is measured from)."""
    inside = [
        i for i, p in enumerate(points)
        if (p.ts >= fold.start_ms if first else p.ts > fold.start_ms) and p.ts <= fold.end_ms
    ]
    if not inside:
        return []
    base = max(inside[0] - 1, 0)
    return list(points[base : inside[-1] + 1])


def _curve(values: Sequence[float], per_year: float) -> dict[str, float | None]:
    returns = metrics.period_returns(values)
    return {
        "total_return": values[-1] / values[0] - 1.0 if values and values[0] > 0 else None,
        "sharpe": metrics.sharpe(returns, per_year),
        "max_drawdown": metrics.max_drawdown(values).depth,
    }


def fold_metrics(result: BacktestResult, folds: Sequence[Fold]) -> list[dict[str, Any]]:
    """Return, Sharpe and drawdown of the strategy and buy and hold inside each fold, and the entries made there."""
    per_year = metrics.periods_per_year(result.interval)
    out = []
    for fold in folds:
        points = _fold_points(result.points, fold, fold.index == 0)
        entries = sum(fold.start_ms <= t.entry_decided_at <= fold.end_ms for t in result.trades)
        row: dict[str, Any] = {"fold": fold.index, "start_ts": fold.start_ms, "end_ts": fold.end_ms,
                               "bars": max(len(points) - 1, 0), "entries": entries}
        if len(points) >= 2:
            row["strategy"] = _curve([p.equity for p in points], per_year)
            row["benchmark"] = _curve([p.benchmark for p in points], per_year)
        else:
            row["strategy"] = row["benchmark"] = None
        out.append(row)
    return out


def study_report(
    runs: Sequence[StudyRun],
    folds: Sequence[Fold],
    *,
    resamples: int = 2000,
    block: float = 5.0,
    seed: int = 7,
    level: float = 0.95,
) -> dict[str, Any]:
    """Every run's report with its Sharpe interval, its p-value against buy and hold, and its folds.

    ``results[symbol][policy]`` is :meth:`BacktestResult.to_dict` plus ``sharpe_ci`` ``[low, high]``,
    ``p_value_vs_buy_and_hold`` (one-sided, H0: Sharpe <= buy and hold's on the same bars) and ``folds``. The same
    resampled bars are used for every policy of a symbol, and the benchmark is the fully invested buy and hold
    curve of the same bars.
    """
    results: dict[str, dict[str, Any]] = {}
    plans: dict[str, BootstrapPlan] = {}
    for run in runs:
        result = run.result
        per_year = metrics.periods_per_year(result.interval)
        returns = metrics.period_returns([p.equity for p in result.points])
        benchmark = metrics.period_returns([p.benchmark for p in result.points])
        plan = plans.get(run.symbol)
        if plan is None or plan.n != len(returns):
            plan = plans[run.symbol] = block_bootstrap_indices(len(returns), resamples, block, seed)
        strategy = sharpe_test(returns, per_year, plan, benchmark=benchmark, level=level)
        bench = sharpe_test(benchmark, per_year, plan, level=level)
        report = result.to_dict()
        report["policy"] = run.policy
        report["strategy"]["sharpe_ci"] = [strategy.ci_low, strategy.ci_high]
        report["strategy"]["p_value_vs_buy_and_hold"] = strategy.p_value
        report["benchmark"]["sharpe_ci"] = [bench.ci_low, bench.ci_high]
        report["folds"] = fold_metrics(result, folds)
        results.setdefault(run.symbol, {})[run.policy] = report
    policies = list(dict.fromkeys(run.policy for run in runs))
    return {
        "symbols": list(results),
        "policies": policies,
        "folds": [{"fold": f.index, "start_ts": f.start_ms, "end_ts": f.end_ms} for f in folds],
        "bootstrap": {"method": "stationary block bootstrap, paired", "resamples": resamples,
                      "mean_block_bars": block, "seed": seed, "level": level,
                      "p_value": "one-sided, H0: Sharpe(policy) <= Sharpe(buy and hold), centred bootstrap"},
        "results": results,
        "by_policy": _by_policy(results, policies),
    }


def _by_policy(results: dict[str, dict[str, Any]], policies: Sequence[str]) -> dict[str, Any]:
    """Per policy, the mean over symbols of the headline metrics (each symbol weighted equally)."""
    out: dict[str, Any] = {}
    for policy in policies:
        rows = [by[policy] for by in results.values() if policy in by]
        sharpes = [r["strategy"]["sharpe"] for r in rows if r["strategy"]["sharpe"] is not None]
        returns = [r["strategy"]["total_return"] for r in rows]
        out[policy] = {
            "symbols": len(rows),
            "mean_sharpe": sum(sharpes) / len(sharpes) if sharpes else None,
            "mean_total_return": sum(returns) / len(returns) if returns else None,
            "trades": sum(r["strategy"]["trades"] + r["strategy"]["open_trades"] for r in rows),
            "beats_buy_and_hold_at_5pct": [
                symbol for symbol, by in results.items()
                if policy in by and (by[policy]["strategy"]["p_value_vs_buy_and_hold"] or 1.0) < 0.05
            ],
        }
    return out


__all__ = ["Fold", "StudyRun", "fold_metrics", "study_report", "walk_forward_folds"]
