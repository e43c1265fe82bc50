"""The signal engine: one object that live agents, replay and backtest all drive the same way."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from engine.aggregator import SignalAggregator, score_from_probs
from engine.bars import BarBuilder, is_newer
from engine.config import EngineSettings
from engine.errors import InvalidInput
from engine.events import Bar, CompositeSignal, Features, NewsItem, SentimentScore, Trade
from engine.features import FeatureCalculator, features_from_state, features_state
from engine.policy import build_policy
from engine.ports import SignalPolicy
from engine.state import corrupt, decode_dict, decode_int, decode_list
from engine.symbols import SymbolMapper

_STATE_KEYS = ("interval", "bars_from", "stats", "seen_news", "calculators", "latest", "builders", "aggregator")


@dataclass(slots=True)
class EngineStats:
    """Counters reported at the end of a run and exported as metrics."""

    bars: int = 0
    bars_not_used: int = 0
    trades: int = 0
    bars_other_interval: int = 0
    news: int = 0
    news_duplicate: int = 0
    news_unmapped: int = 0
    sentiment_scores: int = 0
    signals: int = 0
    warm_bars_skipped: int = 0
    bars_stale: int = 0  # a bar not newer than the symbol's last: a venue resend or an at-least-once redelivery


class SignalEngine:
    """Features per symbol, news-to-symbol mapping, and composite signals.

    The engine is synchronous and pure: callers feed it events in event-time order and publish
    what it returns. Scoring news is the one async step and belongs to the caller's
    :class:`engine.batcher.MicroBatcher`, so the engine itself never waits on a model.

    Signals are decided (a) at each closed bar, from news published strictly before the bar's
    close, and (b) when new sentiment for a symbol arrives, including that news.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        symbols: frozenset[str] | None = None,
        owns: Callable[[str], bool] | None = None,
        policy: SignalPolicy | None = None,
    ) -> None:
        """``symbols`` (a set) and ``owns`` (a predicate, e.g. "hashes to my Kafka partition") both limit
        the symbols this engine trades; news about other symbols is not applied here. ``policy`` turns the
        aggregator's evidence into the signal (default: the one ``settings.policy`` names)."""
        self.settings = settings or EngineSettings()
        self.interval = self.settings.interval
        self.symbols = symbols
        self._owns = owns
        self.mapper = SymbolMapper(self.settings.symbols)
        self.aggregator = SignalAggregator(self.settings.aggregator)
        self.policy = policy if policy is not None else build_policy(self.settings)
        self.stats = EngineStats()
        self._calculators: dict[str, FeatureCalculator] = {}
        self._builders: dict[str, BarBuilder] = {}
        self._latest: dict[str, Features] = {}
        self._seen_news: OrderedDict[str, None] = OrderedDict()
        self._seen_news_limit = 100_000
        self._bars_from_trades = self.settings.bars_from == "trades"
        self._building = False

    # -- market data -------------------------------------------------------------------------
    def wants(self, symbol: str) -> bool:
        return (self.symbols is None or symbol in self.symbols) and (self._owns is None or self._owns(symbol))

    def on_bar(self, bar: Bar) -> tuple[Features, CompositeSignal] | None:
        """A closed bar: update features, then decide. Bars of another interval are counted, not used.

        A bar not newer than the symbol's last one is counted in ``stats.bars_stale`` and skipped.

        Raises:
            InvalidInput: unusable prices; callers dead-letter it.
        """
        if bar.interval != self.interval:
            self.stats.bars_other_interval += 1
            return None
        if self._bars_from_trades and not self._building:
            # Venue klines while bars are built from trades: using both would count each bar twice.
            self.stats.bars_not_used += 1
            return None
        calculator = self._calculators.get(bar.symbol)
        if calculator is None:
            calculator = self._calculators[bar.symbol] = FeatureCalculator(bar.symbol, bar.interval)
        if not is_newer(bar, calculator.last_start):
            # Already decided (a resent kline, a record redelivered after a restart warmed from Redis):
            # counting it again would corrupt every window, and its signal was already emitted.
            self.stats.bars_stale += 1
            return None
        features = calculator.update(bar)  # InvalidInput (unusable prices): callers dead-letter it
        self.stats.bars += 1
        self._latest[bar.symbol] = features
        evidence = self.aggregator.composite(bar.symbol, bar.ts_event, bar.ts_init, features, cause="bar")
        signal = self.policy.decide(evidence)
        self.stats.signals += 1
        return features, signal

    def on_trade(self, trade: Trade) -> list[tuple[Features, CompositeSignal]]:
        """A trade: build bars; returns what any bar it closed produced."""
        self.stats.trades += 1
        if not self._bars_from_trades:
            return []
        builder = self._builders.get(trade.symbol)
        if builder is None:
            builder = self._builders[trade.symbol] = BarBuilder(trade.symbol, self.interval)
        bar = builder.on_trade(trade)
        if bar is None:
            return []
        out = self._on_built_bar(bar)
        return [out] if out else []

    def _on_built_bar(self, bar: Bar) -> tuple[Features, CompositeSignal] | None:
        self._building = True
        try:
            return self.on_bar(bar)
        finally:
            self._building = False

    def closes_bar(self, trade: Trade) -> bool:
        """Whether this trade would close the symbol's open bar (callers score pending news first)."""
        if not self._bars_from_trades:
            return False
        builder = self._builders.get(trade.symbol)
        end = builder.open_bar_end() if builder is not None else None
        return end is not None and trade.ts_event >= end

    def flush_bars(self, ts_init: int) -> list[tuple[Features, CompositeSignal]]:
        """Close every open trade-built bar (end of a replay)."""
        results = []
        for builder in self._builders.values():
            bar = builder.flush(ts_init)
            if bar is not None and (out := self._on_built_bar(bar)):
                results.append(out)
        return results

    def warm(self, symbol: str, bars: list[Bar]) -> None:
        """Restore a symbol's feature state from recent bars (feature store, REST backfill).

        Bars not newer than the state already holds are skipped (a REST backfill after a Redis warm-up
        overlaps it); a bar with unusable prices raises :class:`InvalidInput`.
        """
        calculator = self._calculators.setdefault(symbol, FeatureCalculator(symbol, self.interval))
        for bar in sorted(bars, key=lambda b: b.start):
            if not is_newer(bar, calculator.last_start):
                self.stats.warm_bars_skipped += 1
                continue
            self._latest[symbol] = calculator.update(bar)

    def latest_features(self, symbol: str) -> Features | None:
        return self._latest.get(symbol)

    # -- news --------------------------------------------------------------------------------
    def accept_news(self, item: NewsItem) -> NewsItem | None:
        """Map a news item to symbols and de-duplicate it by id.

        Returns the item (with every symbol it is about filled in, traded here or not, so that its score
        names them all) when it should be scored, else ``None``; duplicates and items about no symbol
        traded here are counted in :attr:`stats`.
        """
        self.stats.news += 1
        if item.id in self._seen_news:
            self.stats.news_duplicate += 1
            return None
        self._seen_news[item.id] = None
        if len(self._seen_news) > self._seen_news_limit:
            self._seen_news.popitem(last=False)
        symbols = self.mapper.symbols_for(item.text, item.tags + item.symbols)
        if not any(self.wants(s) for s in symbols):
            self.stats.news_unmapped += 1
            return None
        if symbols == item.symbols:
            return item
        return NewsItem(item.id, item.source, item.headline, item.body, symbols, item.tags, item.url,
                        item.ts_event, item.ts_init)

    def sentiment(self, item: NewsItem, probs: tuple[float, float, float], ts_init: int) -> SentimentScore:
        """The :class:`SentimentScore` for a scored news item; the policy sees the item here, in feed order."""
        self.policy.on_news(item)
        return score_from_probs(item.id, item.symbols, probs, item.ts_event, ts_init)

    def on_sentiment(self, score: SentimentScore) -> list[CompositeSignal]:
        """Fold a score in; returns the refreshed signal of every symbol it mentions that is traded here."""
        self.stats.sentiment_scores += 1
        traded = tuple(s for s in score.symbols if self.wants(s))
        self.aggregator.add(score, traded)
        signals = []
        at = max(score.ts_event, score.ts_init)
        for symbol in traded:
            evidence = self.aggregator.composite(
                symbol, at, score.ts_init, self._latest.get(symbol), cause=f"news:{score.news_id}", inclusive=True
            )
            signals.append(self.policy.decide(evidence))
        self.stats.signals += len(signals)
        return signals

    # -- snapshots (engine.state) ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything this engine needs to continue exactly, JSON-ready (:func:`engine.state.engine_state`
        frames and compresses it). Mappings keep their insertion order."""
        return {
            "interval": self.interval.value,
            "bars_from": self.settings.bars_from,
            "stats": {f.name: getattr(self.stats, f.name) for f in fields(EngineStats)},
            "seen_news": list(self._seen_news),
            "calculators": {symbol: calc.state() for symbol, calc in self._calculators.items()},
            "latest": {symbol: features_state(features) for symbol, features in self._latest.items()},
            "builders": {symbol: builder.state() for symbol, builder in self._builders.items()},
            "aggregator": self.aggregator.state(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Replace this engine's state with what :meth:`state` returned (on an engine of the same settings).

        ``stats`` and ``aggregator`` are restored in place, so a :class:`engine.runtime.Runtime` already
        built on this engine reports the restored counters. The news-id memory keeps the newest
        ``_seen_news_limit`` ids.

        Raises:
            InvalidInput: ``state`` was made under another interval or ``bars_from``, or is not a state;
                nothing is changed then.
        """
        # A missing key is reported by the structure check below; a different value is reported here.
        interval = state.get("interval", self.interval.value)
        bars_from = state.get("bars_from", self.settings.bars_from)
        if interval != self.interval.value:
            raise InvalidInput(
                f"engine state was made with interval {interval!r}, this engine runs {self.interval.value!r}"
            )
        if bars_from != self.settings.bars_from:
            raise InvalidInput(
                f"engine state was made with bars_from={bars_from!r}, this engine has {self.settings.bars_from!r}"
            )
        s = decode_dict(state, "engine", _STATE_KEYS)
        names = [f.name for f in fields(EngineStats)]
        stats_state = decode_dict(s["stats"], "engine stats", names)
        stats = {name: decode_int(stats_state[name], f"engine stats {name}") for name in names}
        seen = decode_list(s["seen_news"], "seen news ids")
        if not all(isinstance(v, str) for v in seen):
            raise corrupt("seen news ids", "expected strings")
        calculators = {
            symbol: FeatureCalculator.from_state(symbol, self.interval, v)
            for symbol, v in decode_dict(s["calculators"], "feature calculators").items()
        }
        latest = {
            symbol: features_from_state(symbol, self.interval, v)
            for symbol, v in decode_dict(s["latest"], "latest features").items()
        }
        builders = {
            symbol: BarBuilder.from_state(symbol, self.interval, v)
            for symbol, v in decode_dict(s["builders"], "bar builders").items()
        }
        # The aggregator checks everything before it changes anything; it is the last step that can fail.
        self.aggregator.restore_state(s["aggregator"])
        for name, value in stats.items():
            setattr(self.stats, name, value)
        self._seen_news = OrderedDict.fromkeys(seen[max(0, len(seen) - self._seen_news_limit) :])
        self._calculators.clear()
        self._calculators.update(calculators)
        self._latest.clear()
        self._latest.update(latest)
        self._builders.clear()
        self._builders.update(builders)
        self._building = False
