"""``BybitTickSource``: the :class:`engine.ports.TickSource` over Bybit's v5 public websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from adapters.bybit.client import BybitWsClient
from adapters.bybit.config import BybitSettings
from adapters.bybit.decoder import FrameDecoder
from adapters.bybit.orderbook import OrderBookOutOfSync
from adapters.bybit.parsing import kline_topic, orderbook_topic, ticker_topic, trade_topic
from engine.errors import InvalidInput, TransientError
from engine.events import DeadLetter, Event
from engine.ports import Clock, DeadLetterSink

log = logging.getLogger(__name__)

SOURCE_NAME = "bybit"


@dataclass
class SourceStats:
    frames: int = 0
    events: int = 0
    dead_letters: int = 0
    resyncs: int = 0


def topics_for(settings: BybitSettings) -> list[str]:
    """The Bybit topics the settings ask for, per symbol in order: trades, kline, ticker, book."""
    topics: list[str] = []
    for symbol in settings.symbols:
        if settings.trades:
            topics.append(trade_topic(symbol))
        if settings.klines:
            topics.append(kline_topic(settings.interval, symbol))
        if settings.tickers:
            topics.append(ticker_topic(symbol))
        if settings.orderbook_depth:
            topics.append(orderbook_topic(settings.orderbook_depth, symbol))
    return topics


class BybitTickSource:
    """Live trades, confirmed bars, tickers and book tops from Bybit.

    Bad frames (malformed JSON, unknown topic, non-numeric price, unappliable book delta) go to the
    dead-letter sink with their reason and the stream continues. A gap in an order book's update ids
    makes the source resubscribe that topic to get a fresh snapshot.
    """

    def __init__(
        self,
        settings: BybitSettings,
        dead_letters: DeadLetterSink,
        *,
        clock: Clock | None = None,
        client: BybitWsClient | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.client = client or BybitWsClient(settings, clock=clock)
        self.decoder = FrameDecoder()
        self.stats = SourceStats()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe the configured topics and start the connection (``events`` does this too)."""
        if self._task is not None:
            return
        await self.client.subscribe(topics_for(self.settings))
        self._task = asyncio.create_task(self.client.run(self._on_message), name="bybit-websocket")

    async def events(self) -> AsyncIterator[Event]:
        """Engine events in arrival order, until :meth:`close`.

        Raises:
            TransientError: The connection could not be re-established within ``max_reconnects``.
        """
        await self.start()
        task = self._task
        assert task is not None
        while True:
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            if task.done():
                task.result()  # re-raise why the connection gave up
                return
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
            if getter.done() and not getter.cancelled():
                yield getter.result()

    async def close(self) -> None:
        await self.client.close()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _on_message(self, message: str | bytes, ts_init: int) -> None:
        self.stats.frames += 1
        try:
            events = self.decoder.decode_message(message, ts_init)
        except OrderBookOutOfSync as exc:
            await self._dead_letter(exc.reason, message, ts_init)
            if exc.resync:
                self.stats.resyncs += 1
                log.warning("bybit %s out of sync (%s); resubscribing for a snapshot", exc.topic, exc.reason)
                try:
                    await self.client.resubscribe(exc.topic)
                except TransientError as send_error:
                    # The connection is dropping: the reconnect resubscribes every topic anyway.
                    log.info("resubscribe of %s deferred to reconnect: %s", exc.topic, send_error)
            return
        except InvalidInput as exc:
            await self._dead_letter(exc.reason, message, ts_init)
            return
        for event in events:
            self.stats.events += 1
            await self._queue.put(event)

    async def _dead_letter(self, reason: str, message: str | bytes, ts_init: int) -> None:
        self.stats.dead_letters += 1
        raw = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
        await self.dead_letters.publish(
            DeadLetter(reason=reason, source=SOURCE_NAME, raw=raw, line=None, ts_init=ts_init)
        )
