"""The live service: sources -> engine -> sinks, with a graceful, flushing shutdown.

The same :class:`engine.pipeline.SignalEngine` that replay and backtest drive is fed here from
live sources. News is micro-batched by :meth:`engine.batcher.MicroBatcher.submit` (time-bounded);
on stop, sources are closed first, then every pending batch is scored and published before exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.batcher import MicroBatcher
from engine.errors import InvalidInput
from engine.events import Bar, CompositeSignal, DeadLetter, Features, NewsItem, Trade
from engine.pipeline import SignalEngine
from engine.ports import (
    Clock,
    DeadLetterSink,
    FeatureSink,
    FeatureStore,
    NewsSource,
    SentimentSink,
    SignalSink,
    TickSource,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LiveSinks:
    """Where the live service publishes."""

    dead_letters: DeadLetterSink
    signals: Sequence[SignalSink] = ()
    features: Sequence[FeatureSink] = ()
    sentiment: Sequence[SentimentSink] = ()
    store: FeatureStore | None = None


@dataclass(slots=True)
class LiveStats:
    market_events: int = 0
    news: int = 0
    signals: int = 0
    dead_letters: int = 0
    news_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


class LiveService:
    """Runs tick and news sources into the engine until stopped."""

    def __init__(
        self,
        engine: SignalEngine,
        batcher: MicroBatcher,
        sinks: LiveSinks,
        clock: Clock,
        *,
        ticks: Sequence[TickSource] = (),
        news: Sequence[NewsSource] = (),
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.sinks = sinks
        self.clock = clock
        self.ticks = ticks
        self.news = news
        self.stats = LiveStats()
        self._scoring: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> LiveStats:
        """Consume until ``stop`` is set (or every source ends), then flush and return the stats."""
        loops = [asyncio.create_task(self._market_loop(s), name="market") for s in self.ticks]
        loops += [asyncio.create_task(self._news_loop(s), name="news") for s in self.news]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        pending: set[asyncio.Task[Any]] = set(loops)
        while pending and not stop.is_set():
            done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
            for task in done - {stopper}:
                if task.exception() is not None:
                    self.stats.errors.append(f"{task.get_name()}: {task.exception()}")
                    log.error("%s source stopped: %s", task.get_name(), task.exception())
        await self.shutdown(loops)
        stopper.cancel()
        return self.stats

    async def shutdown(self, loops: Sequence[asyncio.Task[None]]) -> None:
        """Close sources, score everything pending, publish it, flush sinks."""
        for source in (*self.ticks, *self.news):
            await source.close()
        for task in loops:
            task.cancel()
        # A source that already failed re-raises its error when awaited; it must not stop the flush
        # below (pending news would be lost), so collect it as a result and record it.
        for task, result in zip(loops, await asyncio.gather(*loops, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                error = f"{task.get_name()}: {result}"
                if error not in self.stats.errors:
                    self.stats.errors.append(error)
                    log.error("%s source stopped: %s", task.get_name(), result)
        await self.batcher.flush()
        while self._scoring:
            await asyncio.gather(*list(self._scoring), return_exceptions=True)
        for sink in self.sinks.signals:
            await sink.flush()

    async def _market_loop(self, source: TickSource) -> None:
        async for event in source.events():
            self.stats.market_events += 1
            try:
                if isinstance(event, Trade):
                    outputs = self.engine.on_trade(event)
                elif isinstance(event, Bar):
                    out = self.engine.on_bar(event)
                    outputs = [out] if out else []
                    if out and self.sinks.store is not None:
                        await self.sinks.store.save(event, out[0])
                else:
                    continue
            except InvalidInput as exc:
                await self._dead_letter(DeadLetter(exc.reason, "market", repr(event)[:2000], None, event.ts_init))
                continue
            for features, signal in outputs:
                await self._emit(features, signal)

    async def _news_loop(self, source: NewsSource) -> None:
        async for item in source.events():
            self.stats.news += 1
            accepted = self.engine.accept_news(item)
            if accepted is None:
                continue
            task = asyncio.create_task(self._score(accepted))
            self._scoring.add(task)
            task.add_done_callback(self._scoring.discard)

    async def _score(self, item: NewsItem) -> None:
        try:
            probs = await self.batcher.submit(item.text)
        except InvalidInput as exc:
            await self._dead_letter(DeadLetter(exc.reason, "news", item.id, None, item.ts_init))
            return
        score = self.engine.sentiment(item, probs, self.clock.now_ms())
        for sink in self.sinks.sentiment:
            await sink.publish(score)
        for signal in self.engine.on_sentiment(score):
            await self._publish(signal)

    async def _emit(self, features: Features, signal: CompositeSignal) -> None:
        for sink in self.sinks.features:
            await sink.publish(features)
        await self._publish(signal)

    async def _publish(self, signal: CompositeSignal) -> None:
        self.stats.signals += 1
        for sink in self.sinks.signals:
            await sink.publish(signal)

    async def _dead_letter(self, record: DeadLetter) -> None:
        self.stats.dead_letters += 1
        await self.sinks.dead_letters.publish(record)
