"""Build Bybit v5 public frames (the inverse of parsing): kline CSV rows -> ``kline.{i}.{S}`` frames.

The test server and the kline-CSV -> recording converter use these, so a replayed CSV travels through
exactly the same parser as a live Bybit stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.bybit.parsing import bybit_interval, kline_topic, parse_interval
from engine.errors import InvalidInput
from engine.events import Bar, Interval
from engine.timestamps import to_epoch_ms

KlineRow = Mapping[str, Any] | Bar


def _number_text(value: object, what: str) -> str:
    """Bybit sends numbers as strings; CSV text is kept verbatim so replay round-trips exactly."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise InvalidInput(f"non-numeric {what} {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        text = repr(value)
    else:
        raise InvalidInput(f"non-numeric {what} {value!r}")
    if not math.isfinite(number):
        raise InvalidInput(f"non-numeric {what} {value!r}")
    return text


def kline_frame(row: KlineRow, symbol: str, interval: Interval) -> dict[str, Any]:
    """One confirmed ``kline.{interval}.{symbol}`` frame for one bar.

    ``row`` is a Bar or a mapping with ``start`` or ``timestamp`` (bar open time) and
    ``open, high, low, close, volume`` (``turnover`` is copied when present).
    """
    if isinstance(row, Bar):
        fields: Mapping[str, Any] = {
            "start": row.start,
            "open": row.open,
            "high": row.high,
            "low": row.low,
            "close": row.close,
            "volume": row.volume,
        }
    else:
        fields = row
    raw_start = fields.get("start", fields.get("timestamp"))
    if raw_start is None:
        raise InvalidInput("kline row has neither 'start' nor 'timestamp'")
    start = to_epoch_ms(raw_start)
    close_time = start + interval.ms
    data: dict[str, Any] = {
        "start": start,
        "end": close_time - 1,
        "interval": bybit_interval(interval),
    }
    for name in ("open", "close", "high", "low", "volume"):
        if name not in fields:
            raise InvalidInput(f"kline row is missing {name!r}")
        data[name] = _number_text(fields[name], name)
    if fields.get("turnover") not in (None, ""):
        data["turnover"] = _number_text(fields["turnover"], "turnover")
    data["confirm"] = True
    data["timestamp"] = close_time
    return {"topic": kline_topic(interval, symbol), "data": [data], "ts": close_time, "type": "snapshot"}


def klines_to_frames(bars_rows: Iterable[KlineRow], symbol: str, interval: Interval | str) -> list[dict[str, Any]]:
    """Kline CSV rows (or Bars) -> confirmed Bybit v5 kline frames, one frame per bar, in input order.

    Args:
        bars_rows: Mappings with ``timestamp``/``start`` (ISO-8601 or epoch ms, the bar's open time) and
            ``open, high, low, close, volume``; or engine Bars.
        symbol: Bybit symbol, e.g. ``BTCUSDT``.
        interval: Engine interval (``Interval.M5`` or ``"5m"``) or Bybit spelling (``"5"``).
    """
    resolved = _resolve_interval(interval)
    return [kline_frame(row, symbol, resolved) for row in bars_rows]


def _resolve_interval(interval: Interval | str) -> Interval:
    if isinstance(interval, Interval):
        return interval
    try:
        return Interval(interval)
    except ValueError:
        return parse_interval(interval)


def trade_frame(symbol: str, trades: Iterable[tuple[int, str, float, float, str]]) -> dict[str, Any]:
    """A ``publicTrade.{symbol}`` frame from ``(T ms, side "Buy"|"Sell", price, size, trade id)``."""
    trades_list = list(trades)
    data = [
        {
            "T": ts,
            "s": symbol,
            "S": side,
            "v": repr(size),
            "p": repr(price),
            "L": "ZeroPlusTick",
            "i": trade_id,
            "BT": False,
        }
        for ts, side, price, size, trade_id in trades_list
    ]
    if not data:
        raise InvalidInput("a trade frame needs at least one trade")
    return {
        "topic": f"publicTrade.{symbol}",
        "type": "snapshot",
        "ts": max(ts for ts, *_ in trades_list),
        "data": data,
    }


def orderbook_frames(
    symbol: str,
    *,
    depth: int = 50,
    deltas: int = 20,
    start_u: int = 1000,
    start_ts: int = 1_700_000_000_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """A deterministic ``orderbook.{depth}.{symbol}`` stream: one snapshot, then ``deltas`` deltas.

    Deltas insert, resize and delete (size ``"0"``) levels near the top, with consecutive ``u``.
    """
    rng = random.Random(seed)
    topic = f"orderbook.{depth}.{symbol}"
    bids = {f"{100.0 - 0.5 * i:.1f}": f"{rng.uniform(0.1, 5):.3f}" for i in range(1, 6)}
    asks = {f"{100.0 + 0.5 * i:.1f}": f"{rng.uniform(0.1, 5):.3f}" for i in range(0, 5)}

    def frame(kind: str, u: int, b: list[list[str]], a: list[list[str]]) -> dict[str, Any]:
        ts = start_ts + 20 * (u - start_u)
        data = {"s": symbol, "b": b, "a": a, "u": u, "seq": 50_000_000 + 3 * u}
        return {"topic": topic, "type": kind, "ts": ts, "data": data, "cts": ts - 2}

    frames = [
        frame(
            "snapshot",
            start_u,
            [[p, s] for p, s in sorted(bids.items(), key=lambda kv: -float(kv[0]))],
            [[p, s] for p, s in sorted(asks.items(), key=lambda kv: float(kv[0]))],
        )
    ]
    for u in range(start_u + 1, start_u + 1 + deltas):
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for _ in range(rng.randint(1, 3)):
            side, book, sign = rng.choice((("b", bids, -1), ("a", asks, 1)))
            price = f"{100.0 + sign * 0.5 * rng.randint(0 if sign > 0 else 1, 6):.1f}"
            if price in book and rng.random() < 0.4:
                del book[price]
                size = "0"
            else:
                size = book[price] = f"{rng.uniform(0.1, 5):.3f}"
            # One entry per price per delta, carrying the level's final size.
            changes[side] = [level for level in changes[side] if level[0] != price]
            changes[side].append([price, size])
        frames.append(frame("delta", u, changes["b"], changes["a"]))
    return frames
