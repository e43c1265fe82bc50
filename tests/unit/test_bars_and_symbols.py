"""Bars built from trades; news mapped to symbols."""

from __future__ import annotations

import pytest

from engine.bars import BarBuilder, closed_bar
from engine.config import SymbolMapSettings
from engine.errors import InvalidInput
from engine.events import Interval, Side, Trade
from engine.symbols import SymbolMapper


def _trade(ts, price, size=1.0, tid="t"):
    return Trade("BTCUSDT", price, size, Side.BUY, tid, ts, ts)


def test_bar_closes_on_first_trade_of_next_interval() -> None:
    builder = BarBuilder("BTCUSDT", Interval.M1)
    assert builder.on_trade(_trade(1_000, 100.0)) is None
    assert builder.on_trade(_trade(2_000, 105.0, 2.0)) is None
    assert builder.on_trade(_trade(3_000, 95.0)) is None
    assert builder.on_trade(_trade(59_999, 101.0)) is None
    bar = builder.on_trade(_trade(60_000, 200.0))
    assert bar is not None
    assert (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume) == (0, 100.0, 105.0, 95.0, 101.0, 5.0)
    assert bar.ts_event == 60_000
    last = builder.flush(999_999)
    assert last is not None and last.start == 60_000 and last.close == 200.0


def test_late_trade_for_a_closed_bar_is_rejected_not_lost() -> None:
    builder = BarBuilder("BTCUSDT", Interval.M1)
    builder.on_trade(_trade(61_000, 1.0))
    with pytest.raises(InvalidInput, match="late trade"):
        builder.on_trade(_trade(1_000, 1.0, tid="late"))


@pytest.mark.parametrize(
    ("text", "tags", "expected"),
    [
        ("Bitcoin Returns Above USD 20K, Ethereum Rallies", (), ("BTCUSDT", "ETHUSDT")),
        ("$ETH and $AAPL move", (), ("ETHUSDT",)),
        ("Connect the dot with the sol of the day", (), ()),
        ("DOT and SOL rally", (), ("DOTUSDT", "SOLUSDT")),
        ("Nifty NFT news", ("bitcoin",), ("BTCUSDT",)),
        ("nothing relevant", ("nft",), ()),
    ],
)
def test_news_symbols_from_names_cashtags_and_tags(text, tags, expected) -> None:
    assert SymbolMapper(SymbolMapSettings()).symbols_for(text, tags) == expected


def test_symbol_mapping_is_configurable() -> None:
    mapper = SymbolMapper(SymbolMapSettings(names={"Chainlink": "linkusdt"}))
    assert mapper.symbols_for("chainlink oracle news") == ("LINKUSDT",)


def test_engine_uses_either_klines_or_trades_for_bars_never_both() -> None:
    from engine.config import EngineSettings
    from engine.events import Bar
    from engine.pipeline import SignalEngine

    kline = Bar("BTCUSDT", Interval.M1, 0, 1.0, 1.0, 1.0, 1.0, 1.0, 60_000, 60_000)
    from_klines = SignalEngine(EngineSettings(bars_from="klines"))
    assert from_klines.on_trade(_trade(1_000, 1.0)) == []
    assert from_klines.on_bar(kline) is not None
    from_trades = SignalEngine(EngineSettings(bars_from="trades"))
    assert from_trades.on_bar(kline) is None and from_trades.stats.bars_not_used == 1
    from_trades.on_trade(_trade(1_000, 1.0))
    assert len(from_trades.on_trade(_trade(61_000, 2.0))) == 1


def test_a_venue_bar_closes_at_start_plus_interval_and_must_be_consistent() -> None:
    interval = Interval.parse("1m")
    bar = closed_bar("BTCUSDT", interval, 60_000, (1.0, 2.0, 0.5, 1.5, 10.0))
    assert (bar.ts_event, bar.ts_init) == (120_000, 120_000)
    assert closed_bar("BTCUSDT", interval, 60_000, (1.0, 2.0, 0.5, 1.5, 10.0), ts_init=125_000).ts_init == 125_000
    with pytest.raises(InvalidInput, match="inconsistent bar"):
        closed_bar("BTCUSDT", interval, 60_000, (1.0, 0.5, 2.0, 1.5, 10.0))
    with pytest.raises(InvalidInput, match="inconsistent bar"):
        closed_bar("BTCUSDT", interval, 60_000, (1.0, 2.0, 0.5, 1.5, -1.0))


def test_comma_separated_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstream.settings import load_settings

    monkeypatch.setenv("SIGSTREAM_BYBIT__SYMBOLS", "btcusdt, ETHUSDT,,")
    monkeypatch.setenv("SIGSTREAM_CCXT__SYMBOLS", "solusdt")
    settings = load_settings()
    assert settings.bybit.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.ccxt.symbols == ("SOLUSDT",)
    monkeypatch.setenv("SIGSTREAM_RSS__FEEDS", "http://a.example/rss, http://b.example/atom")
    assert load_settings().rss.feeds == ("http://a.example/rss", "http://b.example/atom")
