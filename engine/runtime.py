"""The one runtime loop: the only code that feeds :class:`engine.pipeline.SignalEngine`.

Replay, backtest, ``sigstream run`` and the faust worker are thin drivers around :class:`Runtime`:
they differ in where items come from (files, websockets, Kafka partitions), in their clock, and in
where the output goes, never in the rules, which live here:

* **Ordering.** Items are processed in the order they are fed. News waits in a pending batch and is
  scored and applied before the next decision (a closed bar, or a trade that closes one), so a
  decision always sees exactly the news fed before it, however the news was batched. Scoring the
  batch earlier (``score_pending`` from a driver's timer, or a full batch) changes no signal:
  pending news is applied in feed order either way, and scoring is batch-invariant.
* **De-duplication.** A news item is accepted once per id (:meth:`SignalEngine.accept_news`); a
  re-sent copy is counted, never scored or applied again.
* **Dead letters.** Unusable input (bad prices, text the model must not see) is dead-lettered with
  its reason and counted; processing continues.
* **Publishing.** Features, sentiment scores and signals go to the sinks in the order they are made.

Nothing here reads the wall clock: a news-driven signal carries its news item's receive time, so the
same items give the same signals in every mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from engine.batcher import MicroBatcher
from engine.clock import ReplayClock
from engine.errors import InvalidInput
from engine.events import Bar, BookTop, CompositeSignal, DeadLetter, Features, NewsItem, Ticker, Trade
from engine.pipeline import EngineStats, SignalEngine
from engine.ports import DeadLetterSink, FeatureSink, FeatureStore, SentimentSink, SignalSink

RuntimeItem = Trade | Bar | Ticker | BookTop | NewsItem | DeadLetter
"""What a driver feeds: market events, news, and dead letters its source already made."""


@dataclass(slots=True)
class RuntimeSinks:
    """Where the runtime publishes. Only dead letters are required: they are never dropped."""

    dead_letters: DeadLetterSink
    features: Sequence[FeatureSink] = ()
    signals: Sequence[SignalSink] = ()
    sentiment: Sequence[SentimentSink] = ()
    # Bar-close decisions only (they also go to ``signals``); backtests trade on these.
    decisions: Sequence[SignalSink] = ()
    store: FeatureStore | None = None

    async def close(self) -> None:
        """Close every sink once (a sink may serve several roles), dead letters last: closing may still fail."""
        seen: set[int] = set()
        store: list[FeatureStore] = [self.store] if self.store is not None else []
        for sink in (*self.features, *self.signals, *self.sentiment, *self.decisions, *store, self.dead_letters):
            if id(sink) not in seen:
                seen.add(id(sink))
                await sink.close()


@dataclass(slots=True)
class RuntimeStats:
    """What a runtime did: the end-of-run summary, the worker's stop line and the metrics."""

    events: int = 0
    market_events: int = 0
    news: int = 0
    tickers: int = 0
    book_tops: int = 0
    features: int = 0
    signals: int = 0
    news_batches: int = 0
    dead_letters: int = 0
    pending: int = 0  # news accepted and waiting to be scored (a level, not a total)
    engine: EngineStats = field(default_factory=EngineStats)

    def add(self, other: RuntimeStats) -> None:
        """Fold ``other`` in (a worker sums its partitions' runtimes)."""
        for name in RuntimeStats.__slots__:  # type: ignore[attr-defined]  # slots=True dataclass
            if name == "engine":
                continue
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in EngineStats.__slots__:  # type: ignore[attr-defined]
            setattr(self.engine, name, getattr(self.engine, name) + getattr(other.engine, name))


class Runtime:
    """Feeds items to a :class:`SignalEngine`, scores news through a :class:`MicroBatcher`, publishes.

    See the module docstring for the rules. ``feed`` one item at a time (or ``run`` a whole stream);
    ``finish`` at the end of input.
    """

    def __init__(
        self,
        engine: SignalEngine,
        batcher: MicroBatcher,
        sinks: RuntimeSinks,
        *,
        clock: ReplayClock | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.sinks = sinks
        self.clock = clock or ReplayClock()
        self.stats = RuntimeStats(engine=engine.stats)
        self._pending: list[NewsItem] = []
        self._on_progress = on_progress

    @property
    def pending(self) -> int:
        """News accepted and not yet scored and applied."""
        return len(self._pending)

    async def run(self, items: Iterable[RuntimeItem] | AsyncIterable[RuntimeItem]) -> RuntimeStats:
        """Feed a whole time-ordered stream, then :meth:`finish` (replay and backtest)."""
        if isinstance(items, AsyncIterable):
            async for item in items:
                await self.feed(item)
        else:
            for item in items:
                await self.feed(item)
        await self.finish()
        return self.stats

    async def feed(self, item: RuntimeItem) -> None:
        """Process one item; items must be fed in the order they were received."""
        self.stats.events += 1
        if self._on_progress is not None:
            self._on_progress(1)
        if isinstance(item, DeadLetter):
            await self.dead_letter(item)
            return
        self.clock.advance_to(item.ts_init)
        if isinstance(item, NewsItem):
            await self._on_news(item)
            return
        self.stats.market_events += 1
        if isinstance(item, Bar):
            await self._on_bar(item)
        elif isinstance(item, Trade):
            await self._on_trade(item)
        elif isinstance(item, Ticker):
            self.stats.tickers += 1
        else:
            self.stats.book_tops += 1

    async def score_pending(self) -> None:
        """Score the pending news in one batch and apply it in feed order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self.stats.pending = 0
        self.stats.news_batches += 1
        probs = await self.batcher.score([item.text for item in pending])
        for item, p in zip(pending, probs, strict=True):
            # The item's own receive time, never "now": a replay of the same items gives the same signal.
            score = self.engine.sentiment(item, p, item.ts_init)
            for sink in self.sinks.sentiment:
                await sink.publish(score)
            for signal in self.engine.on_sentiment(score):
                await self._publish_signal(signal)

    async def finish(self, *, close_open_bars: bool = True) -> None:
        """End of input: score what is pending, close open trade-built bars, flush the signal sinks.

        A worker that stops but whose stream goes on passes ``close_open_bars=False``: the bar is not
        over, and the next worker continues it from the records it re-reads.
        """
        await self.score_pending()
        if close_open_bars:
            for features, signal in self.engine.flush_bars(self.clock.now_ms()):
                await self._emit(features, None, signal)
        for sink in (*self.sinks.signals, *self.sinks.decisions):
            await sink.flush()

    async def dead_letter(self, record: DeadLetter) -> None:
        self.stats.dead_letters += 1
        await self.sinks.dead_letters.publish(record)

    # -- market data ---------------------------------------------------------------------------
    async def _on_bar(self, bar: Bar) -> None:
        if not self.engine.wants(bar.symbol):
            return
        await self.score_pending()  # the ordering rule: news fed before a decision counts in it
        try:
            out = self.engine.on_bar(bar)
        except InvalidInput as exc:
            await self.dead_letter(DeadLetter(exc.reason, "bar", repr(bar)[:2000], None, bar.ts_init))
            return
        if out is not None:
            await self._emit(out[0], bar, out[1])

    async def _on_trade(self, trade: Trade) -> None:
        if not self.engine.wants(trade.symbol):
            return
        if self._pending and self.engine.closes_bar(trade):
            await self.score_pending()
        try:
            outputs = self.engine.on_trade(trade)
        except InvalidInput as exc:
            await self.dead_letter(DeadLetter(exc.reason, "trade", repr(trade)[:2000], None, trade.ts_init))
            return
        for features, signal in outputs:
            await self._emit(features, None, signal)

    async def _emit(self, features: Features, bar: Bar | None, signal: CompositeSignal) -> None:
        self.stats.features += 1
        if bar is not None and self.sinks.store is not None:
            await self.sinks.store.save(bar, features)
        for sink in self.sinks.features:
            await sink.publish(features)
        await self._publish_signal(signal)
        for decision_sink in self.sinks.decisions:
            await decision_sink.publish(signal)

    # -- news ----------------------------------------------------------------------------------
    async def _on_news(self, item: NewsItem) -> None:
        self.stats.news += 1
        try:
            # Before accept_news marks the id as seen: a bad copy must not shadow a good one sent later.
            self.batcher.validate(item.text)
        except InvalidInput as exc:
            await self.dead_letter(DeadLetter(exc.reason, "news", item.id, None, item.ts_init))
            return
        accepted = self.engine.accept_news(item)
        if accepted is None:
            return  # a duplicate id or about no traded symbol; counted in engine.stats
        self._pending.append(accepted)
        self.stats.pending = len(self._pending)
        if len(self._pending) >= self.batcher.settings.max_batch:
            await self.score_pending()

    async def _publish_signal(self, signal: CompositeSignal) -> None:
        self.stats.signals += 1
        for sink in self.sinks.signals:
            await sink.publish(signal)
