"""Build closed OHLCV bars from trades, per symbol, on event time."""

from __future__ import annotations

import math
from typing import Any

from engine.errors import InvalidInput
from engine.events import Bar, Interval, Trade
from engine.state import corrupt, decode_float, decode_int, decode_list, encode_float

_INF = math.inf  # NaN fails every comparison with it, so one chain also rejects NaN


def is_newer(bar: Bar, last_start: int | None) -> bool:
    """The one ordering rule for one symbol's bars: a bar is used only if it starts after the last one used.

    A duplicate would count twice in every rolling window, and an older bar would reorder them.
    """
    return last_start is None or bar.start > last_start


def bar_order_error(bar: Bar, last_start: int | None) -> InvalidInput | None:
    """:func:`is_newer` as the error a reader dead-letters (None when the bar is newer)."""
    if is_newer(bar, last_start):
        return None
    kind = "duplicate" if bar.start == last_start else "out-of-order"
    return InvalidInput(f"{kind} bar start {bar.start} after {last_start}")


def check_ohlcv(symbol: str, open_: float, high: float, low: float, close: float, volume: float) -> None:
    """Raise :class:`InvalidInput` unless 0 < low <= open, close <= high, and 0 <= volume, all finite.

    Features divide by prices, so a zero or non-finite price would crash them rather than be rejected.
    """
    if not (0.0 < low <= open_ <= high and low <= close <= high and 0.0 <= volume < _INF and high < _INF):
        raise InvalidInput(
            f"{symbol}: inconsistent bar (open {open_}, high {high}, low {low}, close {close}, volume {volume})"
        )


def closed_bar(
    symbol: str,
    interval: Interval,
    start: int,
    ohlcv: tuple[float, float, float, float, float],
    ts_init: int | None = None,
) -> Bar:
    """A venue's closed OHLCV bar as a :class:`Bar`: ``ts_event`` is its close, ``start + interval``.

    ``ts_init`` defaults to the close too (a replayed bar arrives when it closes).

    Raises:
        InvalidInput: see :func:`check_ohlcv`.
    """
    open_, high, low, close, volume = ohlcv
    check_ohlcv(symbol, open_, high, low, close, volume)
    end = start + interval.ms
    return Bar(symbol, interval, start, open_, high, low, close, volume, end, end if ts_init is None else ts_init)


class BarBuilder:
    """Aggregates one symbol's trades into bars of one interval.

    A bar closes when the first trade of a later interval arrives (or on :meth:`flush`). Intervals
    without trades produce no bar. A trade older than the open bar cannot be placed and is
    rejected with :class:`InvalidInput`, so the caller dead-letters it instead of losing it.
    """

    __slots__ = ("_bucket", "_close", "_high", "_interval_ms", "_low", "_open", "_volume", "interval", "symbol")

    def __init__(self, symbol: str, interval: Interval) -> None:
        self.symbol = symbol
        self.interval = interval
        self._interval_ms = interval.ms
        self._bucket = -1
        self._open = self._high = self._low = self._close = self._volume = 0.0

    def on_trade(self, trade: Trade) -> Bar | None:
        """Fold a trade in; returns the bar it closed, if any."""
        bucket = trade.ts_event // self._interval_ms
        price = trade.price
        if not (0.0 < price < _INF and 0.0 <= trade.size < _INF):  # NaN fails every comparison
            raise InvalidInput(f"trade {trade.trade_id} of {self.symbol}: price {price} or size {trade.size} unusable")
        if bucket == self._bucket:
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
            self._close = price
            self._volume += trade.size
            return None
        if bucket < self._bucket:
            raise InvalidInput(
                f"late trade {trade.trade_id} at {trade.ts_event} for already-closed bar of {self.symbol}"
            )
        closed = self._closed_bar(trade.ts_init) if self._bucket >= 0 else None
        self._bucket = bucket
        self._open = self._high = self._low = self._close = price
        self._volume = trade.size
        return closed

    def flush(self, ts_init: int) -> Bar | None:
        """Close the open bar (end of a replay, or the interval's end passed on the clock)."""
        if self._bucket < 0:
            return None
        bar = self._closed_bar(ts_init)
        self._bucket = -1
        return bar

    def open_bar_end(self) -> int | None:
        """Close time of the bar being built, or None."""
        return (self._bucket + 1) * self._interval_ms if self._bucket >= 0 else None

    # -- snapshots (engine.state); not on the per-trade path --------------------------------------------
    def state(self) -> list[Any]:
        """The open bar, JSON-ready: ``[bucket, open, high, low, close, volume]`` (bucket -1: none open)."""
        return [
            self._bucket,
            *[encode_float(v) for v in (self._open, self._high, self._low, self._close, self._volume)],
        ]

    @classmethod
    def from_state(cls, symbol: str, interval: Interval, state: object) -> BarBuilder:
        """The builder :meth:`state` describes; raises :class:`InvalidInput` if ``state`` is not one."""
        what = f"bar builder of {symbol}"
        s = decode_list(state, what, 6)
        builder = cls(symbol, interval)
        builder._bucket = decode_int(s[0], what)
        if builder._bucket < -1:
            raise corrupt(what, f"bucket {builder._bucket}")
        builder._open, builder._high, builder._low, builder._close, builder._volume = (
            decode_float(v, what) for v in s[1:]
        )
        return builder

    def _closed_bar(self, ts_init: int) -> Bar:
        start = self._bucket * self._interval_ms
        return Bar(
            self.symbol,
            self.interval,
            start,
            self._open,
            self._high,
            self._low,
            self._close,
            self._volume,
            start + self._interval_ms,
            ts_init,
        )
