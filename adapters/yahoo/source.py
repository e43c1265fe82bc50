"""``YahooFinanceLoader``: daily bars of a ticker (SPY, AAPL, BTC-USD) from Yahoo Finance, as engine events.

The chapter's loader, behind the engine's types: :meth:`daily_bars` for a date range (backtests, training), and
:meth:`closed_bars`, the :class:`engine.ports.BarBackfill` port, for warming features from recent history.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from adapters.yahoo.client import YahooClient
from adapters.yahoo.config import YahooSettings
from adapters.yahoo.parsing import bars_from_history
from engine.errors import InvalidInput
from engine.events import Bar, DeadLetter, Interval

SOURCE_NAME = "yahoo"


class YahooFinanceLoader:
    """Daily bars from Yahoo's chart API through yfinance. Rows that are not bars become :attr:`dead_letters`."""

    def __init__(self, settings: YahooSettings | None = None, client: YahooClient | None = None) -> None:
        self.settings = settings or YahooSettings()
        self.client = client or YahooClient(self.settings)
        self.dead_letters: list[DeadLetter] = []

    def daily_bars(self, ticker: str, start: date, end: date, symbol: str | None = None) -> list[Bar]:
        """Sessions from ``start`` to ``end`` inclusive, as ``symbol`` (default the ticker, upper case).

        Raises:
            InvalidInput: Yahoo knows no such ticker or has no data in the range.
            TransientError: the request failed; retrying may help.
        """
        if end < start:
            raise InvalidInput(f"Yahoo range ends {end} before it starts {start}")
        name = (symbol or ticker).upper()
        import yfinance

        try:
            frame = self.client.history(ticker, start, end + timedelta(days=1))
        except yfinance.exceptions.YFException as exc:
            raise InvalidInput(f"Yahoo has no daily prices for {ticker} {start}..{end}: {exc}") from None
        bars, rejected = bars_from_history(frame, name)
        self.dead_letters += [DeadLetter(r.reason, SOURCE_NAME, r.raw, None, r.ts) for r in rejected]
        if not bars:
            raise InvalidInput(f"Yahoo returned no usable daily bar for {ticker} {start}..{end}")
        return bars

    async def closed_bars(self, symbol: str, interval: Interval, after_start_ms: int) -> list[Bar]:
        """Daily sessions that started after ``after_start_ms`` and have closed (the BarBackfill port)."""
        if interval is not Interval.D1:
            raise InvalidInput(f"Yahoo Finance bars here are daily; {interval.value} was asked for")
        start = datetime.fromtimestamp(after_start_ms / 1000, tz=UTC).date() + timedelta(days=1)
        today = datetime.now(tz=UTC).date()
        bars = await asyncio.to_thread(self.daily_bars, symbol, start, today)
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        return [b for b in bars if b.start > after_start_ms and b.ts_event <= now_ms]
