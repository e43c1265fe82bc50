"""ccxt's real async bybit client backfilling OHLCV from a local Bybit v5 REST server."""

from __future__ import annotations

import pytest

from adapters.ccxt.config import CcxtSettings
from adapters.ccxt.source import CcxtBackfillSource
from engine.clock import ManualClock
from engine.errors import InvalidInput, TransientError
from engine.events import Bar, Interval
from testkit.bybit_rest import synthetic_bars
from tests.support.servers import CollectingDeadLetters, bybit_rest_server

pytestmark = pytest.mark.integration

START = 1_748_623_200_000
M1 = Interval.M1


def settings_for(url: str, **overrides: object) -> CcxtSettings:
    values: dict[str, object] = {
        "rest_url": url,
        "symbols": ("BTCUSDT",),
        "interval": M1,
        "limit": 50,
        "timeout_ms": 3000,
        "attempts": 2,
    }
    values.update(overrides)
    return CcxtSettings(**values)  # type: ignore[arg-type]


def key(bar: Bar) -> tuple:
    return (bar.symbol, bar.interval, bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ts_event)


async def test_backfill_returns_recent_closed_bars_oldest_first() -> None:
    served = synthetic_bars("BTCUSDT", M1, START, 120)
    # "Now" is 30 s into bar 100: bars 0..99 are closed, bar 100 is forming, 101+ do not exist yet.
    now = START + 100 * 60_000 + 30_000
    async with bybit_rest_server(bars=served[:101]) as server:
        source = CcxtBackfillSource(settings_for(server.url), CollectingDeadLetters(), clock=ManualClock(now))
        try:
            bars = await source.backfill("BTCUSDT")
        finally:
            await source.close()
        kline_queries = [
            q for p, q in zip(server.log.paths, server.log.queries, strict=True) if p == "/v5/market/kline"
        ]
        assert "/v5/market/instruments-info" in server.log.paths  # ccxt's load_markets
    assert [key(b) for b in bars] == [key(b) for b in served[50:100]]
    assert all(b.ts_init == now for b in bars)
    assert kline_queries == [{"symbol": "BTCUSDT", "limit": "51", "interval": "1", "category": "linear"}]


async def test_events_yields_every_symbol_then_ends() -> None:
    btc = synthetic_bars("BTCUSDT", Interval.M5, START, 10)
    eth = synthetic_bars("ETHUSDT", Interval.M5, START, 10)
    now = START + 10 * 300_000
    async with bybit_rest_server(bars=btc + eth) as server:
        settings = settings_for(server.url, symbols=("BTCUSDT", "ETHUSDT"), interval=Interval.M5, limit=5)
        source = CcxtBackfillSource(settings, CollectingDeadLetters(), clock=ManualClock(now))
        try:
            bars = [bar async for bar in source.events()]
        finally:
            await source.close()
    assert [(b.symbol, b.start) for b in bars] == [(b.symbol, b.start) for b in btc[5:] + eth[5:]]


async def test_server_errors_are_retried() -> None:
    served = synthetic_bars("BTCUSDT", M1, START, 5)
    async with bybit_rest_server(bars=served) as server:
        server.fail_next = 1
        source = CcxtBackfillSource(
            settings_for(server.url, limit=5), CollectingDeadLetters(), clock=ManualClock(START + 5 * 60_000)
        )
        try:
            bars = await source.backfill("BTCUSDT")
        finally:
            await source.close()
        # load_markets asks twice (listed + PreLaunch); one 503 made the whole call retry.
        assert server.log.paths.count("/v5/market/instruments-info") == 4
    assert len(bars) == 5


async def test_unreachable_exchange_is_a_transient_error() -> None:
    async with bybit_rest_server() as server:
        url = server.url
    source = CcxtBackfillSource(settings_for(url, attempts=1), CollectingDeadLetters(), clock=ManualClock(START))
    try:
        with pytest.raises(TransientError):
            await source.backfill("BTCUSDT")
    finally:
        await source.close()


async def test_unknown_symbol_is_invalid_input() -> None:
    async with bybit_rest_server(bars=synthetic_bars("BTCUSDT", M1, START, 3)) as server:
        source = CcxtBackfillSource(settings_for(server.url), CollectingDeadLetters(), clock=ManualClock(START))
        try:
            with pytest.raises(InvalidInput, match="DOGEUSDT"):
                await source.backfill("DOGEUSDT")
        finally:
            await source.close()
