"""Event-time replay: drive the engine from a time-ordered stream of recorded events.

Replay and backtest share this loop, and the live path calls the same engine methods, so a
recording gives the same signals whichever way it is processed. Nothing here reads the wall
clock: time comes from the events, which is why the same input gives byte-identical output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from engine.batcher import MicroBatcher
from engine.clock import ReplayClock
from engine.errors import InvalidInput
from engine.events import Bar, BookTop, CompositeSignal, DeadLetter, Features, NewsItem, Ticker, Trade
from engine.pipeline import EngineStats, SignalEngine
from engine.ports import DeadLetterSink, FeatureSink, SentimentSink, SignalSink

ReplayItem = Trade | Bar | Ticker | BookTop | NewsItem | DeadLetter


@dataclass(slots=True)
class ReplaySinks:
    """Where replay output goes; every sink is optional except dead letters, which are never dropped."""

    dead_letters: DeadLetterSink
    features: Sequence[FeatureSink] = ()
    signals: Sequence[SignalSink] = ()
    sentiment: Sequence[SentimentSink] = ()
    # Bar-close decisions only (also published to ``signals``); backtests trade on these.
    decisions: Sequence[SignalSink] = ()


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, for the end-of-run summary."""

    events: int = 0
    features: int = 0
    signals: int = 0
    dead_letters: int = 0
    tickers: int = 0
    book_tops: int = 0
    engine: EngineStats = field(default_factory=EngineStats)


class Replayer:
    """Feeds items to a :class:`SignalEngine`, scoring news through a :class:`MicroBatcher`.

    News waits in a pending list and is scored in batches; it is always scored before the next
    decision (bar close), so batching never changes which news a decision sees.
    """

    def __init__(
        self,
        engine: SignalEngine,
        batcher: MicroBatcher,
        sinks: ReplaySinks,
        clock: ReplayClock | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.sinks = sinks
        self.clock = clock or ReplayClock()
        self.report = ReplayReport(engine=engine.stats)
        self._pending: list[NewsItem] = []
        self._on_progress = on_progress

    async def run(self, items: Iterable[ReplayItem]) -> ReplayReport:
        for item in items:
            await self.feed(item)
        await self.finish()
        return self.report

    async def feed(self, item: ReplayItem) -> None:
        """Process one item in event-time order."""
        self.report.events += 1
        if self._on_progress is not None:
            self._on_progress(1)
        if isinstance(item, DeadLetter):
            await self._dead_letter(item)
            return
        self.clock.advance_to(item.ts_init)
        if isinstance(item, Trade):
            await self._on_trade(item)
        elif isinstance(item, Bar):
            await self._on_bar(item)
        elif isinstance(item, NewsItem):
            await self._on_news(item)
        elif isinstance(item, Ticker):
            self.report.tickers += 1
        else:
            self.report.book_tops += 1

    async def _on_trade(self, trade: Trade) -> None:
        if not self.engine.wants(trade.symbol):
            return
        if self._pending and self.engine.closes_bar(trade):
            await self._score_pending()
        try:
            outputs = self.engine.on_trade(trade)
        except InvalidInput as exc:
            await self._dead_letter(DeadLetter(exc.reason, "trade", repr(trade), None, trade.ts_init))
            return
        for features, signal in outputs:
            await self._emit(features, signal)

    async def _on_bar(self, bar: Bar) -> None:
        if not self.engine.wants(bar.symbol):
            return
        await self._score_pending()
        try:
            out = self.engine.on_bar(bar)
        except InvalidInput as exc:
            await self._dead_letter(DeadLetter(exc.reason, "bar", repr(bar), None, bar.ts_init))
            return
        if out is not None:
            await self._emit(*out)

    async def _on_news(self, item: NewsItem) -> None:
        accepted = self.engine.accept_news(item)
        if accepted is None:
            return
        try:
            self.batcher.validate(accepted.text)
        except InvalidInput as exc:
            await self._dead_letter(DeadLetter(exc.reason, "news", accepted.id, None, item.ts_init))
            return
        self._pending.append(accepted)
        if len(self._pending) >= self.batcher.settings.max_batch:
            await self._score_pending()

    async def finish(self) -> None:
        """End of input: score what is pending and close open trade-built bars."""
        await self._score_pending()
        for features, signal in self.engine.flush_bars(self.clock.now_ms()):
            await self._emit(features, signal)
        for sink in (*self.sinks.signals, *self.sinks.decisions):
            await sink.flush()

    async def _score_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        probs = await self.batcher.score([item.text for item in pending])
        for item, p in zip(pending, probs, strict=True):
            score = self.engine.sentiment(item, p, item.ts_init)
            for sentiment_sink in self.sinks.sentiment:
                await sentiment_sink.publish(score)
            for signal in self.engine.on_sentiment(score):
                await self._publish_signal(signal)

    async def _emit(self, features: Features, signal: CompositeSignal) -> None:
        self.report.features += 1
        for sink in self.sinks.features:
            await sink.publish(features)
        await self._publish_signal(signal)
        for decision_sink in self.sinks.decisions:
            await decision_sink.publish(signal)

    async def _publish_signal(self, signal: CompositeSignal) -> None:
        self.report.signals += 1
        for sink in self.sinks.signals:
            await sink.publish(signal)

    async def _dead_letter(self, record: DeadLetter) -> None:
        self.report.dead_letters += 1
        await self.sinks.dead_letters.publish(record)
