"""``BybitTickSource``: the :class:`engine.ports.TickSource` over Bybit's v5 public websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from adapters.bybit.client import BybitWsClient
from adapters.bybit.config import BybitSettings
from adapters.bybit.decoder import FrameDecoder
from adapters.bybit.frames import kline_frame
from adapters.bybit.orderbook import OrderBookOutOfSync
from adapters.bybit.parsing import kline_topic, orderbook_topic, ticker_topic, trade_topic
from engine.errors import InvalidInput, TransientError
from engine.events import Bar, DeadLetter, Event, Received
from engine.ports import Clock, DeadLetterSink

log = logging.getLogger(__name__)

SOURCE_NAME = "bybit"


@dataclass
class SourceStats:
    frames: int = 0
    events: int = 0
    dead_letters: int = 0
    resyncs: int = 0
    reconnects: int = 0  # new connections after the first, each flagged on its first message


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
    makes the source resubscribe that topic to get a fresh snapshot. The first message of every
    connection after the first is yielded with ``reconnected=True``: Bybit does not re-send what it
    published while the link was down, so the driver can backfill it (see :func:`kline_received`).
    """

    def __init__(
        self,
        settings: BybitSettings,
        dead_letters: DeadLetterSink,
        *,
        clock: Clock,
        client: BybitWsClient | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.client = client or BybitWsClient(settings, clock=clock)
        self.decoder = FrameDecoder()
        self.stats = SourceStats()
        self._queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._connection = 0  # the client connection the last message came on (its stats.connects)

    async def start(self) -> None:
        """Subscribe the configured topics and start the connection (``events`` does this too)."""
        if self._task is not None:
            return
        await self.client.subscribe(topics_for(self.settings))
        self._task = asyncio.create_task(self.client.run(self._on_message), name="bybit-websocket")

    async def events(self) -> AsyncIterator[Event]:
        """Just the engine events of :meth:`received`, in arrival order."""
        async for message in self.received():
            for event in message.events:
                yield event

    async def received(self) -> AsyncIterator[Received]:
        """Every websocket message with its decoded events, in arrival order, until :meth:`close`.

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
        raw = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
        # Connections that came and went without a message fold into this one: one gap, one flag.
        connection = self.client.stats.connects
        reconnected = self._connection != 0 and connection != self._connection
        self._connection = connection
        if reconnected:
            self.stats.reconnects += 1
        try:
            events = self.decoder.decode_message(message, ts_init)
        except OrderBookOutOfSync as exc:
            await self._dead_letter(exc.reason, message, ts_init)
            await self._queue.put(Received(SOURCE_NAME, raw, (), ts_init, reconnected))
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
            await self._queue.put(Received(SOURCE_NAME, raw, (), ts_init, reconnected))
            return
        self.stats.events += len(events)
        await self._queue.put(Received(SOURCE_NAME, raw, tuple(events), ts_init, reconnected))  # type: ignore[arg-type]  # the decoder yields market events only

    async def _dead_letter(self, reason: str, message: str | bytes, ts_init: int) -> None:
        self.stats.dead_letters += 1
        raw = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
        await self.dead_letters.publish(
            DeadLetter(reason=reason, source=SOURCE_NAME, raw=raw, line=None, ts_init=ts_init)
        )


def kline_received(bar: Bar, ts_init: int) -> Received:
    """``bar`` as Bybit would have sent it live: a confirmed ``kline.{i}.{S}`` frame, received at ``ts_init``.

    The events are decoded from that very text, as a replay of a recording holding it decodes them, so a
    bar backfilled over REST after a reconnect is fed, recorded and replayed as one and the same message.
    """
    raw = orjson.dumps(kline_frame(bar, bar.symbol, bar.interval)).decode()
    events = FrameDecoder().decode_message(raw, ts_init)  # a kline needs no book state: a fresh decoder
    return Received(SOURCE_NAME, raw, tuple(events), ts_init)  # type: ignore[arg-type]  # klines decode to Bars
