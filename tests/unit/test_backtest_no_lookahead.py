"""No look-ahead: rewriting everything after time T leaves every decision and fill up to T unchanged."""

from __future__ import annotations

import random

import pytest

from engine.backtest import BacktestSettings
from engine.events import Bar, NewsItem, Signal
from tests.support.backtest import DAY, T0, backtest, bar, daily_bars, headline, in_time_order

BULL = ["Bitcoin surges to a record", "Bitcoin rally gains pace", "BTC jumps as buyers return"]
BEAR = ["Bitcoin plunges after exchange hack", "Bitcoin crash deepens", "Regulator moves to ban BTC trading"]
DAYS = 45


def _market(seed: int) -> tuple[list[Bar], list[NewsItem]]:
    rng = random.Random(seed)
    closes, opens, price = [], [], 40_000.0
    for _ in range(DAYS):
        opens.append(price)
        price *= 1 + rng.gauss(0, 0.03)
        closes.append(price)
        price *= 1 + rng.gauss(0, 0.002)  # the next open is near, not at, the close
    news = []
    for day in range(DAYS):
        for _ in range(rng.randint(0, 3)):
            ts = T0 + day * DAY + rng.randrange(DAY)
            news.append(headline(ts, rng.choice(BULL if rng.random() < 0.5 else BEAR)))
    return daily_bars(opens, closes), news


def _rewrite_after(bars: list[Bar], news: list[NewsItem], cut: int, seed: int) -> tuple[list[Bar], list[NewsItem]]:
    """Every price and news item strictly after ``cut`` is changed; the open at ``cut`` is a price at ``cut``."""
    rng = random.Random(seed)
    new_bars = []
    for b in bars:
        if b.start > cut:
            b = bar(b.start, b.open * rng.uniform(0.5, 1.5), b.close * rng.uniform(0.5, 1.5))
        elif b.start == cut:
            b = bar(b.start, b.open, b.close * rng.uniform(0.5, 1.5))
        new_bars.append(b)
    kept = [n for n in news if n.ts_event <= cut]
    flipped = [
        headline(n.ts_event, BEAR[0] if n.headline in BULL else BULL[0], n.id + "!") for n in news if n.ts_event > cut
    ]
    # Strongly one-sided news exactly at the cut and just after it: a leak would move decisions at the cut.
    extra = [headline(cut, f"Bitcoin crash {i}") for i in range(5)] + [headline(cut + 1, "Bitcoin surges again")]
    return new_bars, kept + flipped + extra


@pytest.mark.parametrize("short", [False, True])
@pytest.mark.parametrize("cut_day", [8, 23, 31])  # days with a fill exactly at the cut
def test_rewriting_everything_after_t_leaves_decisions_and_fills_up_to_t_unchanged(cut_day: int, short: bool) -> None:
    bars, news = _market(seed=11)
    cut = T0 + cut_day * DAY  # a bar boundary: the close of one bar and the open of the next
    settings = BacktestSettings(allow_short=short, position_size=0.5)
    original = backtest(in_time_order(bars, news), settings, threshold=0.6)
    changed_bars, changed_news = _rewrite_after(bars, news, cut, seed=cut_day)
    # News at the cut goes ahead of the bar closing there: the worst case for the strict rule.
    changed = backtest(in_time_order(changed_bars, changed_news, news_first=True), settings, threshold=0.6)

    assert [d for d in original.decisions if d.ts <= cut] == [d for d in changed.decisions if d.ts <= cut]
    assert [f for f in original.fills if f.ts <= cut] == [f for f in changed.fills if f.ts <= cut]
    assert [p for p in original.points if p.ts <= cut] == [p for p in changed.points if p.ts <= cut]
    # The rewrite did reach the engine: later decisions and equity are not all the same.
    assert original.decisions != changed.decisions
    assert original.points[-1].equity != changed.points[-1].equity
    # And the scenario trades before the cut, so the comparison is not vacuous.
    assert any(f.ts == cut for f in original.fills)


def test_news_published_exactly_at_the_close_counts_from_the_next_bar() -> None:
    bars = daily_bars(opens=[100, 100, 100, 100], closes=[100, 100, 100, 100])
    close_of_bar_1 = T0 + 2 * DAY
    # News ahead of the bar in the stream: only the aggregator's strict rule keeps it out of this close.
    news = [headline(close_of_bar_1, "Bitcoin surges to a record")]
    result = backtest(in_time_order(bars, news, news_first=True))
    by_ts = {d.ts: d for d in result.decisions}
    assert by_ts[close_of_bar_1].signal is Signal.HOLD and by_ts[close_of_bar_1].num_sources == 0
    assert by_ts[close_of_bar_1 + DAY].signal is Signal.BUY and by_ts[close_of_bar_1 + DAY].actionable


def test_a_decision_at_a_close_fills_at_the_next_bars_open_never_its_own_close() -> None:
    bars = daily_bars(opens=[100, 100, 130, 140], closes=[100, 120, 135, 150])
    result = backtest(
        in_time_order(bars, [headline(T0 + DAY + 3_600_000, "Bitcoin surges")]),
        BacktestSettings(slippage_bps=0, fee_bps=0),
    )
    (fill,) = result.fills
    assert fill.decided_at == T0 + 2 * DAY  # bar 1's close, where close was 120
    assert fill.ts == T0 + 2 * DAY and fill.price == 130  # bar 2's open, not 120
