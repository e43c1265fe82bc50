"""Costs: fees and slippage change the result by exactly what was paid, and every P&L is accounted for."""

from __future__ import annotations

import itertools
import random

import pytest

from engine.backtest import BacktestResult, BacktestSettings
from tests.support.backtest import DAY, T0, backtest, daily_bars, headline, in_time_order

HEADLINES = ["Bitcoin surges to a record", "Bitcoin crash deepens", "Bitcoin rally gains", "Bitcoin plunges"]


def _run(**settings: float | bool) -> BacktestResult:
    rng = random.Random(3)
    opens, closes, price = [], [], 30_000.0
    for _ in range(60):
        opens.append(price)
        price *= 1 + rng.gauss(0, 0.04)
        closes.append(price)
    news = [
        headline(T0 + day * DAY + rng.randrange(DAY), rng.choice(HEADLINES))
        for day in range(60)
        for _ in range(rng.randint(0, 2))
    ]
    return backtest(in_time_order(daily_bars(opens, closes), news), BacktestSettings(**settings))


@pytest.mark.parametrize("short", [False, True])
def test_doubling_fees_changes_equity_by_exactly_the_extra_fees(short: bool) -> None:
    single = _run(fee_bps=5, slippage_bps=2, allow_short=short)
    double = _run(fee_bps=10, slippage_bps=2, allow_short=short)
    assert len(single.fills) >= 10  # enough trading for the comparison to mean something
    # Same fills (costs never feed back into sizes), each with twice the fee.
    assert [(f.ts, f.side, f.quantity, f.price) for f in single.fills] == [
        (f.ts, f.side, f.quantity, f.price) for f in double.fills
    ]
    assert [f.fee * 2 for f in single.fills] == [f.fee for f in double.fills]
    assert double.fees_paid == 2 * single.fees_paid
    extra = double.fees_paid - single.fees_paid
    assert single.final_equity - double.final_equity == pytest.approx(extra, abs=1e-6)
    # At every bar, the gap is the extra fees paid so far.
    fill_times = [f.ts for f in single.fills]
    cumulative = list(itertools.accumulate(f.fee for f in single.fills))
    for a, b in zip(single.points, double.points, strict=True):
        paid = sum(1 for t in fill_times if t < a.ts)
        assert a.equity - b.equity == pytest.approx(cumulative[paid - 1] if paid else 0.0, abs=1e-6)


def test_zero_costs_minus_costs_paid_is_the_costed_result() -> None:
    free = _run(fee_bps=0, slippage_bps=0)
    costed = _run(fee_bps=5, slippage_bps=0)
    assert free.fees_paid == 0.0
    assert free.final_equity - costed.final_equity == pytest.approx(costed.fees_paid, abs=1e-6)


def test_slippage_costs_exactly_what_the_fills_gave_up() -> None:
    free = _run(fee_bps=0, slippage_bps=0)
    slipped = _run(fee_bps=0, slippage_bps=20)
    assert slipped.slippage_paid > 0
    assert free.final_equity - slipped.final_equity == pytest.approx(slipped.slippage_paid, rel=1e-9)
    for f in slipped.fills:
        assert abs(f.price - f.reference_price) == pytest.approx(f.reference_price * 0.002)
        assert (f.price > f.reference_price) == (f.side == "BUY")  # always the worse side


@pytest.mark.parametrize("short", [False, True])
def test_trade_pnls_add_up_to_the_equity_change(short: bool) -> None:
    result = _run(fee_bps=5, slippage_bps=2, allow_short=short)
    assert {t.direction for t in result.trades} == ({"long", "short"} if short else {"long"})
    total = sum(t.pnl for t in result.trades)  # closed trades plus the open one marked at the last close
    assert total == pytest.approx(result.final_equity - 100_000, abs=1e-6)
    assert sum(t.fees for t in result.trades) == pytest.approx(result.fees_paid)
