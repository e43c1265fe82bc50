"""Bybit v5 frame parsing against frames shaped exactly like Bybit's documented pushes."""

from __future__ import annotations

import copy

import orjson
import pytest

from adapters.bybit.frames import klines_to_frames, to_epoch_ms
from adapters.bybit.parsing import (
    OrderBookUpdate,
    bybit_interval,
    merge_ticker,
    parse_frame,
    parse_interval,
    parse_message,
)
from engine.errors import InvalidInput
from engine.events import Bar, Interval, Side, Ticker, Trade

TS_INIT = 1_700_000_000_123

# Shapes as in Bybit's v5 docs (websocket/public/kline, trade, ticker, orderbook).
KLINE_CONFIRMED = {
    "topic": "kline.5.BTCUSDT",
    "data": [
        {
            "start": 1672324800000,
            "end": 1672325099999,
            "interval": "5",
            "open": "16649.5",
            "close": "16677",
            "high": "16677",
            "low": "16608",
            "volume": "2.081",
            "turnover": "34666.4005",
            "confirm": True,
            "timestamp": 1672325100012,
        }
    ],
    "ts": 1672325100012,
    "type": "snapshot",
}

TRADES = {
    "topic": "publicTrade.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304486868,
    "data": [
        {
            "T": 1672304486865,
            "s": "BTCUSDT",
            "S": "Buy",
            "v": "0.001",
            "p": "16578.50",
            "L": "PlusTick",
            "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
            "BT": False,
        },
        {
            "T": 1672304486866,
            "s": "BTCUSDT",
            "S": "Sell",
            "v": "0.25",
            "p": "16578.00",
            "L": "MinusTick",
            "i": "3c2a5d0e-0b8b-5b8e-9d33-4f1b0a6d1e77",
            "BT": False,
        },
    ],
}

TICKER_SNAPSHOT = {
    "topic": "tickers.BTCUSDT",
    "type": "snapshot",
    "data": {
        "symbol": "BTCUSDT",
        "tickDirection": "PlusTick",
        "price24hPcnt": "0.017103",
        "lastPrice": "17216.00",
        "prevPrice24h": "16926.50",
        "highPrice24h": "17281.50",
        "lowPrice24h": "16915.00",
        "prevPrice1h": "17238.00",
        "markPrice": "17217.33",
        "indexPrice": "17227.36",
        "openInterest": "68744.761",
        "openInterestValue": "1183601235.91",
        "turnover24h": "1570383121.943499",
        "volume24h": "91705.276",
        "nextFundingTime": "1673280000000",
        "fundingRate": "-0.000212",
        "bid1Price": "17215.50",
        "bid1Size": "84.489",
        "ask1Price": "17216.00",
        "ask1Size": "83.020",
    },
    "cs": 24987956059,
    "ts": 1673272861686,
}

TICKER_DELTA = {
    "topic": "tickers.BTCUSDT",
    "type": "delta",
    "data": {"symbol": "BTCUSDT", "bid1Price": "17215.00", "bid1Size": "12.1"},
    "cs": 24987956060,
    "ts": 1673272861702,
}

BOOK_SNAPSHOT = {
    "topic": "orderbook.50.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304484978,
    "data": {
        "s": "BTCUSDT",
        "b": [["16493.50", "0.006"], ["16493.00", "0.100"]],
        "a": [["16611.00", "0.029"], ["16612.00", "0.213"]],
        "u": 18521288,
        "seq": 7961638724,
    },
    "cts": 1672304484976,
}


def test_confirmed_kline_becomes_bar_closing_at_start_plus_interval() -> None:
    [bar] = parse_frame(KLINE_CONFIRMED, TS_INIT)
    assert bar == Bar(
        symbol="BTCUSDT",
        interval=Interval.M5,
        start=1672324800000,
        open=16649.5,
        high=16677.0,
        low=16608.0,
        close=16677.0,
        volume=2.081,
        ts_event=1672324800000 + 300_000,
        ts_init=TS_INIT,
    )


def test_unconfirmed_kline_yields_nothing() -> None:
    frame = copy.deepcopy(KLINE_CONFIRMED)
    frame["data"][0]["confirm"] = False
    assert parse_frame(frame, TS_INIT) == []


def test_public_trades_become_trades_in_order() -> None:
    trades = parse_frame(TRADES, TS_INIT)
    assert trades == [
        Trade(
            "BTCUSDT",
            16578.5,
            0.001,
            Side.BUY,
            "20f43950-d8dd-5b31-9112-a178eb6023af",
            1672304486865,
            TS_INIT,
        ),
        Trade(
            "BTCUSDT",
            16578.0,
            0.25,
            Side.SELL,
            "3c2a5d0e-0b8b-5b8e-9d33-4f1b0a6d1e77",
            1672304486866,
            TS_INIT,
        ),
    ]


def test_ticker_snapshot_and_delta_merge() -> None:
    [snap] = parse_frame(TICKER_SNAPSHOT, TS_INIT)
    assert snap == Ticker("BTCUSDT", 17216.0, 17215.5, 17216.0, 1673272861686, TS_INIT)
    [delta] = parse_frame(TICKER_DELTA, TS_INIT + 1)
    assert delta == Ticker("BTCUSDT", None, 17215.0, None, 1673272861702, TS_INIT + 1)
    assert merge_ticker(snap, delta) == Ticker("BTCUSDT", 17216.0, 17215.0, 17216.0, 1673272861702, TS_INIT + 1)


def test_ticker_delta_without_prices_yields_nothing() -> None:
    frame = {**TICKER_DELTA, "data": {"symbol": "BTCUSDT", "openInterest": "68744.9"}}
    assert parse_frame(frame, TS_INIT) == []


def test_orderbook_snapshot_uses_matching_engine_time() -> None:
    [update] = parse_frame(BOOK_SNAPSHOT, TS_INIT)
    assert update == OrderBookUpdate(
        topic="orderbook.50.BTCUSDT",
        symbol="BTCUSDT",
        snapshot=True,
        bids=((16493.5, 0.006), (16493.0, 0.1)),
        asks=((16611.0, 0.029), (16612.0, 0.213)),
        update_id=18521288,
        seq=7961638724,
        ts_event=1672304484976,
        ts_init=TS_INIT,
    )


def test_orderbook_delta_without_cts_falls_back_to_ts() -> None:
    frame = {
        "topic": "orderbook.50.BTCUSDT",
        "type": "delta",
        "ts": 1687940967466,
        "data": {
            "s": "BTCUSDT",
            "b": [["30247.20", "30.028"]],
            "a": [["30248.70", "0"]],
            "u": 177400507,
            "seq": 1,
        },
    }
    [update] = parse_frame(frame, TS_INIT)
    assert isinstance(update, OrderBookUpdate)
    assert not update.snapshot
    assert update.asks == ((30248.7, 0.0),)
    assert update.ts_event == 1687940967466


@pytest.mark.parametrize(
    "ack",
    [
        {
            "success": True,
            "ret_msg": "subscribe",
            "conn_id": "2324d924-aa4d-45b0",
            "req_id": "1",
            "op": "subscribe",
        },
        {"success": True, "ret_msg": "pong", "conn_id": "0970e817-426e-429a", "req_id": "", "op": "ping"},
        {"success": True, "ret_msg": "", "conn_id": "cfcb4", "req_id": "", "op": "unsubscribe"},
        {"req_id": "", "op": "pong", "args": ["1675418560633"], "conn_id": "cfcb4"},
    ],
)
def test_acks_and_pongs_yield_nothing(ack: dict) -> None:
    assert parse_frame(ack, TS_INIT) == []


def test_rejected_subscription_is_invalid_input_with_bybit_reason() -> None:
    ack = {
        "success": False,
        "ret_msg": "error:handler not found,topic:kline.7.BTCUSDT",
        "conn_id": "x",
        "op": "subscribe",
    }
    with pytest.raises(InvalidInput, match="handler not found"):
        parse_frame(ack, TS_INIT)


def _mutated(frame: dict, path: tuple, value: object) -> dict:
    out = copy.deepcopy(frame)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_mutated(KLINE_CONFIRMED, ("data", 0, "close"), "abc"), "non-numeric close"),
        (_mutated(KLINE_CONFIRMED, ("data", 0, "high"), "NaN"), "non-numeric high"),
        (_mutated(KLINE_CONFIRMED, ("data", 0, "volume"), KeyError), "missing field 'volume'"),
        (_mutated(KLINE_CONFIRMED, ("data", 0, "confirm"), "true"), "confirm is not a boolean"),
        (_mutated(KLINE_CONFIRMED, ("data", 0, "start"), "yesterday"), "start is not epoch milliseconds"),
        (_mutated(KLINE_CONFIRMED, ("topic",), "kline.7.BTCUSDT"), "unknown Bybit kline interval '7'"),
        (_mutated(KLINE_CONFIRMED, ("topic",), "kline.3.BTCUSDT"), "has no engine interval"),
        (_mutated(KLINE_CONFIRMED, ("data", 0, "interval"), "1"), "does not match the topic"),
        (_mutated(KLINE_CONFIRMED, ("data",), {"start": 1}), "data is not a list"),
        (_mutated(TRADES, ("data", 0, "p"), "16,578.50"), "non-numeric price"),
        (_mutated(TRADES, ("data", 0, "S"), "Long"), "unknown trade side 'Long'"),
        (_mutated(TRADES, ("data", 1, "s"), "ETHUSDT"), "does not match the topic"),
        (_mutated(TRADES, ("data", 0, "T"), KeyError), "missing field 'T'"),
        (_mutated(TICKER_SNAPSHOT, ("data", "lastPrice"), "x"), "non-numeric lastPrice"),
        (_mutated(TICKER_SNAPSHOT, ("type",), "full"), "unknown frame type 'full'"),
        (_mutated(BOOK_SNAPSHOT, ("data", "b", 0), ["16493.50"]), "level is not"),
        (_mutated(BOOK_SNAPSHOT, ("data", "u"), KeyError), "missing field 'u'"),
        (_mutated(BOOK_SNAPSHOT, ("topic",), "orderbook.deep.BTCUSDT"), "malformed orderbook topic"),
        ({**TRADES, "topic": "liquidation.BTCUSDT"}, "unknown topic 'liquidation.BTCUSDT'"),
        ({"hello": "world"}, "neither a topic nor a known op"),
        ({"topic": 42}, "topic is not a string"),
    ],
)
def test_malformed_frames_raise_invalid_input_with_reason(frame: dict, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        parse_frame(frame, TS_INIT)
    assert info.value.raw == frame


def test_malformed_json_and_non_object_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        parse_message(b'{"topic": "kline.1.BTCUSDT", "data": [', TS_INIT)
    with pytest.raises(InvalidInput, match="not a JSON object"):
        parse_message(b"[1, 2]", TS_INIT)
    assert parse_message(orjson.dumps(KLINE_CONFIRMED), TS_INIT)[0].close == 16677.0


@pytest.mark.parametrize(
    ("text", "interval"),
    [("1", Interval.M1), ("5", Interval.M5), ("15", Interval.M15), ("60", Interval.H1), ("D", Interval.D1)],
)
def test_bybit_intervals_round_trip(text: str, interval: Interval) -> None:
    assert parse_interval(text) is interval
    assert bybit_interval(interval) == text


def test_kline_csv_rows_convert_to_frames_that_parse_back_to_the_same_bars() -> None:
    rows = [
        {
            "timestamp": "2025-05-30 16:40:00+00:00",
            "open": "0.6901",
            "high": "0.6912",
            "low": "0.6894",
            "close": "0.6898",
            "volume": "216241.0",
        },
        {
            "timestamp": "1748623260000",
            "open": "0.6898",
            "high": "0.6916",
            "low": "0.6886",
            "close": "0.6913",
            "volume": "254670.0",
        },
    ]
    frames = klines_to_frames(rows, "ADAUSDT", "1m")
    assert frames[0]["topic"] == "kline.1.ADAUSDT"
    data = frames[0]["data"][0]
    assert data == {
        "start": 1748623200000,
        "end": 1748623259999,
        "interval": "1",
        "open": "0.6901",
        "close": "0.6898",
        "high": "0.6912",
        "low": "0.6894",
        "volume": "216241.0",
        "confirm": True,
        "timestamp": 1748623260000,
    }
    bars = [bar for frame in frames for bar in parse_frame(frame, TS_INIT)]
    assert [(b.start, b.close, b.volume, b.ts_event) for b in bars] == [
        (1748623200000, 0.6898, 216241.0, 1748623260000),
        (1748623260000, 0.6913, 254670.0, 1748623320000),
    ]
    # Bars convert back to identical frames, so the round trip is lossless.
    assert klines_to_frames(bars, "ADAUSDT", Interval.M1)[1]["data"][0]["close"] == "0.6913"


def test_naive_timestamps_are_read_as_utc() -> None:
    assert to_epoch_ms("2025-05-30 16:40:00") == 1748623200000
