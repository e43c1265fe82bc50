"""Tiny in-memory markets for backtest tests: daily bars, headlines, and a one-call backtest."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from adapters.files.sink import DeadLetterFile
from engine.backtest import BacktestResult, BacktestSettings, run_backtest
from engine.batcher import MicroBatcher
from engine.config import AggregatorSettings, EngineSettings
from engine.events import Bar, Interval, NewsItem
from engine.pipeline import SignalEngine
from engine.ports import SignalPolicy
from engine.runtime import RuntimeItem
from tests.support.lexicon_model import LexiconSentimentModel

DAY = 86_400_000
T0 = 1_640_995_200_000  # 2022-01-01T00:00:00Z
SYMBOL = "BTCUSDT"
# These markets test fills, costs and timing, not the evidence rule: a near-zero Dirichlet prior makes the
# confidence the plain vote share, so a single headline can trade (tests/unit/test_aggregator.py covers the prior).
MECHANICS_PRIOR = 1e-6


def bar(start: int, open_: float, close: float, symbol: str = SYMBOL) -> Bar:
    return Bar(
        symbol,
        Interval.D1,
        start,
        open_,
        max(open_, close) + 1.0,
        min(open_, close) - 1.0,
        close,
        10.0,
        start + DAY,
        start + DAY,
    )


def daily_bars(opens: Sequence[float], closes: Sequence[float], start: int = T0) -> list[Bar]:
    return [bar(start + i * DAY, o, c) for i, (o, c) in enumerate(zip(opens, closes, strict=True))]


def headline(ts: int, text: str, news_id: str | None = None) -> NewsItem:
    return NewsItem(news_id or f"{ts}:{text}", "test", text, "", (), (), "", ts, ts)


def in_time_order(bars: Sequence[Bar], news: Sequence[NewsItem], *, news_first: bool = False) -> list[RuntimeItem]:
    """Bars before news at the same instant, as the file merge orders them (or news first)."""
    bar_rank, news_rank = (1, 0) if news_first else (0, 1)
    keyed = [(b.ts_init, bar_rank, i, b) for i, b in enumerate(bars)]
    keyed += [(n.ts_init, news_rank, i, n) for i, n in enumerate(news)]
    return [item for *_, item in sorted(keyed, key=lambda k: k[:3])]


def backtest(
    items: Sequence[RuntimeItem],
    settings: BacktestSettings | None = None,
    *,
    threshold: float = 0.7,
    start_ms: int | None = None,
    end_ms: int | None = None,
    policy: SignalPolicy | None = None,
    prior_strength: float = MECHANICS_PRIOR,
) -> BacktestResult:
    engine_settings = EngineSettings(
        interval=Interval.D1, aggregator=AggregatorSettings(threshold=threshold, prior_strength=prior_strength)
    )
    engine = SignalEngine(engine_settings, symbols=frozenset({SYMBOL}), policy=policy)
    batcher = MicroBatcher(LexiconSentimentModel(), engine_settings.batcher)
    return asyncio.run(
        run_backtest(
            items,
            engine,
            batcher,
            settings or BacktestSettings(),
            DeadLetterFile(None),
            symbol=SYMBOL,
            start_ms=start_ms,
            end_ms=end_ms,
        )
    )
