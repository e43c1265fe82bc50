"""yfinance's daily DataFrame -> engine :class:`Bar` records; the only place its times and units are converted.

A Yahoo daily row is one trading session, indexed by the session's date at midnight in the exchange's time zone
(America/New_York for SPY). The engine's daily bars are UTC days (Bybit's), so a session becomes the bar of its
calendar date: ``start`` = that date at 00:00 UTC, ``ts_event`` (the close) = ``start`` + 1 day. Weekends and
holidays are missing bars, which the backtest counts as gaps. A row with a missing or non-positive price is not
a bar: it is returned as a rejected row with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.events import Bar, Interval

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that is not a usable bar, with why (dead-lettered by the source)."""

    reason: str
    raw: str
    ts: int


def _number(row: Any, column: str) -> float | None:
    value = row.get(column)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bars_from_history(frame: Any, symbol: str) -> tuple[list[Bar], list[RejectedRow]]:
    """Bars (oldest first) and rejected rows of one ticker's daily history frame."""
    bars: list[Bar] = []
    rejected: list[RejectedRow] = []
    for stamp, row in frame.iterrows():
        session = stamp.date()  # the trading date in the exchange's zone
        start = int(datetime(session.year, session.month, session.day, tzinfo=UTC).timestamp() * 1000)
        values = {c: _number(row, c) for c in ("Open", "High", "Low", "Close", "Volume")}
        prices = [values[c] for c in ("Open", "High", "Low", "Close")]
        if any(p is None or p <= 0 for p in prices):
            rejected.append(RejectedRow(f"{symbol} {session}: missing or non-positive price", repr(dict(row)),
                                        start + DAY_MS))
            continue
        o, h, lo, c = (float(p) for p in prices if p is not None)
        volume = values["Volume"] or 0.0
        bars.append(Bar(symbol, Interval.D1, start, o, h, lo, c, volume, start + DAY_MS, start + DAY_MS))
    bars.sort(key=lambda b: b.start)
    return bars, rejected
