"""ccxt OHLCV rows -> :class:`engine.events.Bar`. Only closed bars are kept: the newest REST kline is
usually still forming, and a feature computed on it would differ from the live confirmed bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine.bars import closed_bar
from engine.errors import InvalidInput
from engine.events import Bar, Interval


def _num(value: object, what: str, symbol: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{symbol}: OHLCV {what} is not a finite number: {value!r}")
    return float(value)


def ohlcv_to_bar(row: Sequence[Any], symbol: str, interval: Interval, ts_init: int) -> Bar:
    """One ccxt ``[timestamp, open, high, low, close, volume]`` row (timestamp = bar open, epoch ms)."""
    if len(row) < 6:
        raise InvalidInput(f"{symbol}: OHLCV row has {len(row)} fields, expected 6: {row!r}")
    start = row[0]
    if isinstance(start, bool) or not isinstance(start, int):
        raise InvalidInput(f"{symbol}: OHLCV timestamp is not epoch ms: {start!r}")
    open_, high, low, close, volume = (
        _num(row[i], name, symbol) for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1)
    )
    return closed_bar(symbol, interval, start, (open_, high, low, close, volume), ts_init)


def closed_bars(
    rows: Sequence[Sequence[Any]], symbol: str, interval: Interval, now_ms: int
) -> list[Bar | InvalidInput]:
    """Rows whose bar has closed by ``now_ms``, oldest first, as Bars or the reason they are not."""
    out: list[Bar | InvalidInput] = []
    for row in rows:
        try:
            bar = ohlcv_to_bar(row, symbol, interval, now_ms)
        except InvalidInput as exc:
            exc.raw = row
            out.append(exc)
            continue
        if bar.ts_event <= now_ms:
            out.append(bar)
    out.sort(key=lambda item: item.start if isinstance(item, Bar) else -1)
    return out
