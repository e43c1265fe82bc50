"""``CcxtBackfillSource``: recent closed bars per symbol over REST.

It warms the features at start-up (``backfill``; ``events`` yields those bars per symbol, oldest first,
and ends; the live websocket source takes over from there), and it is the :class:`engine.ports.BarBackfill`
that heals the gap a websocket reconnect leaves (``closed_bars``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator

from adapters.ccxt.client import CcxtClient
from adapters.ccxt.config import CcxtSettings
from adapters.ccxt.parsing import closed_bars
from engine.errors import InvalidInput
from engine.events import Bar, DeadLetter, Interval
from engine.ports import Clock, DeadLetterSink
from engine.retry import Backoff, retry_transient

log = logging.getLogger(__name__)

SOURCE_NAME = "ccxt"

# Bybit's kline endpoint answers at most 1000 rows per request.
_MAX_ROWS = 1000


class CcxtBackfillSource:
    """Backfills ``settings.limit`` closed bars of ``settings.interval`` for every configured symbol, and
    fetches the closed bars after a given one on demand (:class:`engine.ports.BarBackfill`)."""

    def __init__(
        self,
        settings: CcxtSettings,
        dead_letters: DeadLetterSink,
        *,
        clock: Clock,
        client: CcxtClient | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.clock = clock
        self.client = client or CcxtClient(settings)
        self._backoff = Backoff(initial_s=0.2, maximum_s=5.0)

    async def backfill(self, symbol: str) -> list[Bar]:
        """The most recent closed bars of one symbol (exchange id, e.g. ``BTCUSDT``), oldest first.

        Raises:
            TransientError: The exchange stayed unreachable for ``attempts`` tries.
            InvalidInput: The exchange does not list ``symbol``.
        """
        await retry_transient(self.client.load_markets, attempts=self.settings.attempts, backoff=self._backoff)
        unified = self.client.unified_symbol(symbol)
        # One bar more than asked: the newest is usually still forming and is dropped below.
        rows = await retry_transient(
            lambda: self.client.fetch_ohlcv(unified, self.settings.interval.value, self.settings.limit + 1),
            attempts=self.settings.attempts,
            backoff=self._backoff,
        )
        now = self.clock.now_ms()
        bars: list[Bar] = []
        for item in closed_bars(rows, symbol, self.settings.interval, now):
            if isinstance(item, InvalidInput):
                await self.dead_letters.publish(
                    DeadLetter(reason=item.reason, source=SOURCE_NAME, raw=repr(item.raw), line=None, ts_init=now)
                )
            else:
                bars.append(item)
        bars = bars[-self.settings.limit :]
        log.info("backfilled %d %s bars of %s", len(bars), self.settings.interval.value, symbol)
        return bars

    async def closed_bars(self, symbol: str, interval: Interval, after_start_ms: int) -> list[Bar]:
        """The closed bars of ``symbol`` starting after ``after_start_ms``, oldest first (the gap a reconnect
        left). One request, sized from the wall clock to cover the gap; a gap longer than 1000 bars keeps its
        newest 1000 (logged).

        Raises:
            TransientError: The exchange stayed unreachable for ``attempts`` tries.
            InvalidInput: The exchange does not list ``symbol``.
        """
        await retry_transient(self.client.load_markets, attempts=self.settings.attempts, backoff=self._backoff)
        unified = self.client.unified_symbol(symbol)
        now = self.clock.now_ms()
        # Bars starting after after_start_ms up to now, plus the one still forming.
        wanted = max(0, (now - after_start_ms) // interval.ms) + 1
        if wanted > _MAX_ROWS:
            log.warning("%s: %d %s bars missed, more than one request holds; fetching the newest %d",
                        symbol, wanted - 1, interval.value, _MAX_ROWS - 1)
        rows = await retry_transient(
            lambda: self.client.fetch_ohlcv(unified, interval.value, min(wanted, _MAX_ROWS)),
            attempts=self.settings.attempts,
            backoff=self._backoff,
        )
        bars: list[Bar] = []
        for item in closed_bars(rows, symbol, interval, now):
            if isinstance(item, InvalidInput):
                await self.dead_letters.publish(
                    DeadLetter(reason=item.reason, source=SOURCE_NAME, raw=repr(item.raw), line=None, ts_init=now)
                )
            elif item.start > after_start_ms:
                bars.append(item)
        return bars

    def prepare(self) -> None:
        """Import ccxt now (a second or more, blocking the event loop), not at the first reconnect."""
        try:
            importlib.import_module("ccxt.async_support")
        except ImportError:
            pass  # the first request says so (MissingDependency)

    async def events(self) -> AsyncIterator[Bar]:
        for symbol in self.settings.symbols:
            for bar in await self.backfill(symbol):
                yield bar

    async def close(self) -> None:
        await self.client.close()
