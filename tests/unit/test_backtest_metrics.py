"""Backtest metrics against values computed by hand on tiny series, and a fully hand-checked run."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import orjson
import pytest

from engine.backtest import BacktestSettings
from engine.backtest import metrics as m
from engine.events import Interval, Signal
from sigstream.modes.backtest import report_dict, write_report
from tests.support.backtest import DAY, T0, backtest, daily_bars, headline, in_time_order

# Equity 100 -> 110 -> 99 -> 99 -> 108.9: returns +10%, -10%, 0%, +10%.
EQUITY = [100.0, 110.0, 99.0, 99.0, 108.9]


def test_period_returns_are_simple_returns() -> None:
    assert m.period_returns(EQUITY) == pytest.approx([0.1, -0.1, 0.0, 0.1])


def test_sharpe_sortino_and_volatility_match_hand_computed_values() -> None:
    returns = m.period_returns(EQUITY)
    # mean 0.025; squared deviations 0.075², 0.125², 0.025², 0.075² sum to 0.0275; sample variance /3.
    stdev = math.sqrt(0.0275 / 3)
    assert m.annualised_volatility(returns, 365) == pytest.approx(stdev * math.sqrt(365))
    assert m.sharpe(returns, 365) == pytest.approx(0.025 / stdev * math.sqrt(365))
    assert m.sharpe(returns, 365) == pytest.approx(4.98863, rel=1e-5)
    # downside deviation: sqrt((0 + 0.1² + 0 + 0) / 4) = 0.05, so Sortino = 0.025 / 0.05 * sqrt(365).
    assert m.sortino(returns, 365) == pytest.approx(0.5 * math.sqrt(365))


def test_sharpe_and_sortino_are_undefined_without_variance_or_downside() -> None:
    assert m.sharpe([0.01, 0.01, 0.01], 365) is None
    assert m.sharpe([0.01], 365) is None
    assert m.sortino([0.01, 0.02], 365) is None


def test_max_drawdown_depth_and_duration_when_recovered() -> None:
    equity = [100.0, 110.0, 99.0, 99.0, 108.9, 115.0, 90.0, 120.0]
    dd = m.max_drawdown(equity)
    # 110 -> 99 is -10%; 115 -> 90 is -21.7% and is the deepest; recovered at index 7.
    assert dd.depth == pytest.approx(25 / 115)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (5, 6, 7, 2)


def test_max_drawdown_duration_runs_to_the_end_when_never_recovered() -> None:
    dd = m.max_drawdown([100.0, 80.0, 90.0, 95.0])
    assert dd.depth == pytest.approx(0.2)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (0, 1, None, 3)
    assert m.max_drawdown([1.0, 2.0, 3.0]).depth == 0.0


def test_max_drawdown_starts_at_the_last_bar_of_a_flat_top() -> None:
    # A strategy that starts flat sits at its peak for many bars; the drawdown is only the bars under water.
    dd = m.max_drawdown([100.0, 100.0, 100.0, 100.0, 99.0, 98.0])
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (3, 5, None, 2)
    dd = m.max_drawdown([100.0, 90.0, 100.0, 80.0])
    assert dd.depth == pytest.approx(0.2)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (2, 3, None, 1)


def test_drawdown_series_is_fall_from_running_peak() -> None:
    assert m.drawdown_series([100.0, 120.0, 90.0, 130.0]) == pytest.approx([0.0, 0.0, 0.25, 0.0])


def test_turnover_win_rate_profit_factor_and_cagr() -> None:
    assert m.turnover(50.0, [100.0, 110.0, 90.0]) == pytest.approx(0.5)
    pnls = [10.0, -5.0, 20.0, -5.0]
    assert m.win_rate(pnls) == 0.5
    assert m.profit_factor(pnls) == pytest.approx(3.0)
    assert m.profit_factor([1.0, 2.0]) is None and m.win_rate([]) is None
    assert m.cagr(100.0, 121.0, 2 * 365 * DAY) == pytest.approx(0.1)


def test_periods_per_year_follow_the_bar_interval() -> None:
    assert m.periods_per_year(Interval.D1) == 365
    assert m.periods_per_year(Interval.H1) == 365 * 24
    assert m.periods_per_year(Interval.M1) == 365 * 24 * 60


def _tiny_run():
    bars = daily_bars(opens=[100, 100, 110, 120, 90], closes=[100, 110, 120, 90, 100])
    news = [
        headline(T0 + DAY + DAY // 2, "Bitcoin surges"),  # during bar 1 -> BUY at bar 1's close
        headline(T0 + 3 * DAY + DAY // 4, "Bitcoin crash"),  # during bar 3 -> SELL at bar 3's close
    ]
    settings = BacktestSettings(initial_capital=100_000, position_size=0.5, fee_bps=10, slippage_bps=20)
    return backtest(in_time_order(bars, news), settings), settings


def test_tiny_backtest_matches_hand_computed_fills_equity_and_report() -> None:
    result, _ = _tiny_run()
    assert [d.signal for d in result.decisions] == [Signal.HOLD, Signal.BUY, Signal.HOLD, Signal.SELL, Signal.HOLD]
    qty = 0.5 * 100_000 / 110  # half the equity at bar 2's open
    buy_price, sell_price = 110 * 1.002, 90 * 0.998
    buy_fee, sell_fee = qty * buy_price * 0.001, qty * sell_price * 0.001
    buy, sell = result.fills
    assert (buy.ts, buy.decided_at, buy.side) == (T0 + 2 * DAY, T0 + 2 * DAY, "BUY")
    assert buy.quantity == pytest.approx(qty) and buy.price == pytest.approx(buy_price)
    assert buy.fee == pytest.approx(buy_fee) and buy.slippage == pytest.approx(qty * 110 * 0.002)
    assert (sell.ts, sell.side) == (T0 + 4 * DAY, "SELL") and sell.price == pytest.approx(sell_price)
    cash = 100_000 - qty * buy_price
    expected_equity = [
        100_000,
        100_000,
        cash + qty * 120 - buy_fee,
        cash + qty * 90 - buy_fee,
        cash + qty * sell_price - buy_fee - sell_fee,
    ]
    assert [p.equity for p in result.points] == pytest.approx(expected_equity)

    report = result.to_dict()
    strategy = report["strategy"]
    pnl = qty * (sell_price - buy_price) - buy_fee - sell_fee
    assert strategy["total_return"] == pytest.approx(pnl / 100_000)
    assert strategy["fees_paid"] == pytest.approx(buy_fee + sell_fee)
    assert strategy["turnover"] == pytest.approx((qty * buy_price + qty * sell_price) / (sum(expected_equity) / 5))
    assert strategy["exposure"] == pytest.approx(2 / 5)
    assert (strategy["trades"], strategy["win_rate"], strategy["profit_factor"]) == (1, 0.0, 0.0)
    returns = [b / a - 1 for a, b in itertools.pairwise(expected_equity)]
    assert strategy["sharpe"] == pytest.approx(m.sharpe(returns, 365))
    # peak after bar 2, trough at the end (the exit costs push bar 4 below bar 3)
    assert strategy["max_drawdown"] == pytest.approx(1 - expected_equity[4] / expected_equity[2])
    assert strategy["max_drawdown_duration_bars"] == 2 and not strategy["max_drawdown_recovered"]
    units = 100_000 / (100 * 1.002 * 1.001)  # buy and hold from bar 0's close, with the same costs
    assert report["benchmark"]["final_equity"] == pytest.approx(units * 100)
    assert report["benchmark"]["total_return"] == pytest.approx(units * 100 / 100_000 - 1)


def test_report_folder_has_json_trade_log_png_and_summary(tmp_path: Path) -> None:
    result, _ = _tiny_run()
    report = report_dict(result, "lexicon")
    write_report(result, report, tmp_path)
    saved = orjson.loads((tmp_path / "report.json").read_bytes())
    for key in (
        "total_return",
        "cagr",
        "annualised_volatility",
        "sharpe",
        "sortino",
        "max_drawdown",
        "max_drawdown_duration_bars",
        "trades",
        "win_rate",
        "profit_factor",
        "turnover",
        "exposure",
        "fees_paid",
    ):
        assert key in saved["strategy"]
    assert {"total_return", "sharpe"} <= set(saved["benchmark"])
    assert saved["start"] == "2022-01-02T00:00:00Z"
    with (tmp_path / "trades.csv").open() as handle:
        trades = list(csv.DictReader(handle))
    assert [(t["direction"], t["status"], t["entry_time"], t["exit_time"], t["policy"]) for t in trades] == [
        ("long", "closed", "2022-01-03T00:00:00Z", "2022-01-05T00:00:00Z", "sentiment")
    ]
    assert saved["policy"] == "sentiment"
    png = (tmp_path / "equity.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    summary = (tmp_path / "summary.md").read_text()
    assert "| Sharpe |" in summary and "equity.png" in summary
