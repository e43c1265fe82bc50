"""Drive the engine over recorded prices and news and trade its bar-close decisions.

There is no backtest-only signal logic: :func:`run_backtest` feeds the input to the same
:class:`engine.runtime.Runtime` that replay, ``sigstream run`` and the worker use, and the
:class:`Backtester` listens on the runtime's decision sink. Each bar reaches the backtester just before the engine
sees it, so the order of work for bar ``t`` is: fill the decision of bar ``t-1`` at ``t``'s open,
mark equity at ``t``'s close, then receive the engine's decision for ``t`` (made from news
published strictly before ``t``'s close). Nothing from bar ``t+1`` exists yet when ``t`` is decided.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.backtest import metrics
from engine.backtest.broker import Fill, SimulatedBroker, TradeRecord
from engine.backtest.config import BacktestSettings
from engine.bars import bar_order_error
from engine.batcher import MicroBatcher
from engine.errors import FatalError, InvalidInput
from engine.events import Bar, CompositeSignal, DeadLetter, Interval, NewsItem, Signal, Trade
from engine.pipeline import SignalEngine
from engine.ports import DeadLetterSink
from engine.runtime import Runtime, RuntimeItem, RuntimeSinks, RuntimeStats


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's decision at one bar close, and the position change it asked for (if any)."""

    ts: int
    signal: Signal
    confidence: float
    actionable: bool
    num_sources: int
    target_side: int | None


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account state at one bar close."""

    ts: int
    close: float
    equity: float
    benchmark: float
    position: float


@dataclass(slots=True)
class DataQuality:
    """What the input looked like: every skipped or rejected record is counted here."""

    bars: int = 0
    warmup_bars: int = 0
    missing_bars: int = 0
    gaps: int = 0
    trades_seen: int = 0
    news_before_window: int = 0
    items_after_end: int = 0
    dead_letters: int = 0
    dead_letters_by_source: dict[str, int] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class _CountingDeadLetters:
    """Counts dead letters by source and reason, then passes them on."""

    def __init__(self, inner: DeadLetterSink, quality: DataQuality) -> None:
        self._inner = inner
        self._quality = quality

    async def publish(self, record: DeadLetter) -> None:
        quality = self._quality
        quality.dead_letters += 1
        quality.dead_letters_by_source[record.source] = quality.dead_letters_by_source.get(record.source, 0) + 1
        # Group by the reason's wording: numbers (times, prices, line numbers) would make every key unique.
        reason = _NUMBER.sub("#", record.reason.split(":")[0])
        quality.dead_letter_reasons[reason] = quality.dead_letter_reasons.get(reason, 0) + 1
        await self._inner.publish(record)

    @property
    def count(self) -> int:
        return self._quality.dead_letters

    async def flush(self) -> None:
        await self._inner.flush()

    async def close(self) -> None:
        await self._inner.close()


class Backtester:
    """Trades one symbol's bar-close decisions on a :class:`SimulatedBroker`.

    It is the runtime's decision sink (``publish``/``flush``), and :meth:`observe` wraps the input
    stream to see each bar first. ``start_ms``/``end_ms`` bound the traded period; earlier bars and
    news still reach the engine, so its state at ``start_ms`` is what a live engine would have had.
    """

    def __init__(
        self,
        symbol: str,
        interval: Interval,
        settings: BacktestSettings | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:
        self.symbol = symbol.upper()
        self.interval = interval
        self.settings = settings or BacktestSettings()
        self.start_ms = start_ms
        self.end_ms = end_ms
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise InvalidInput(f"backtest end {end_ms} is not after its start {start_ms}")
        self.broker = SimulatedBroker(self.settings)
        self.points: list[EquityPoint] = []
        self.decisions: list[Decision] = []
        self.quality = DataQuality()
        self._last_bar: Bar | None = None
        self._awaiting: int | None = None
        self._benchmark_units = 0.0

    # -- the input stream --------------------------------------------------------------------
    def observe(self, items: Iterable[RuntimeItem], news_horizon_ms: int | None = None) -> Iterator[RuntimeItem]:
        """Pass ``items`` on to the runtime, seeing this symbol's bars before the engine does.

        Out-of-order and duplicate bars become dead letters here, so neither the engine nor the
        account ever sees them. News older than ``news_horizon_ms`` before the start cannot count
        toward any traded decision and is skipped unscored (counted).
        """
        quality = self.quality
        oldest_news = None if self.start_ms is None or news_horizon_ms is None else self.start_ms - news_horizon_ms
        for item in items:
            if isinstance(item, DeadLetter):
                yield item
                continue
            if isinstance(item, Bar) and item.symbol == self.symbol and item.interval == self.interval:
                if self.end_ms is not None and item.ts_event > self.end_ms:
                    return  # time-ordered input: nothing later can affect the traded period
                rejected = self._check_order(item)
                if rejected is not None:
                    yield rejected
                    continue
                self._on_bar(item)
            elif self.end_ms is not None and item.ts_init > self.end_ms:
                quality.items_after_end += 1
                continue
            elif isinstance(item, NewsItem) and oldest_news is not None and item.ts_event < oldest_news:
                quality.news_before_window += 1
                continue
            elif isinstance(item, Trade) and item.symbol == self.symbol:
                quality.trades_seen += 1
            yield item

    def _check_order(self, bar: Bar) -> DeadLetter | None:
        last = self._last_bar
        if last is not None:
            if (order_error := bar_order_error(bar, last.start)) is not None:
                return DeadLetter(
                    order_error.reason,
                    f"backtest:{self.symbol}",
                    repr(bar),
                    None,
                    bar.ts_init,
                )
            if bar.start < last.ts_event:
                raise InvalidInput(
                    f"{self.symbol} bar starting at {bar.start} overlaps the previous bar "
                    f"({last.start}..{last.ts_event}): these are not {self.interval.value} bars; "
                    "pass the prices' own --interval"
                )
        self._last_bar = bar
        return None

    def _on_bar(self, bar: Bar) -> None:
        if self.start_ms is not None and bar.start < self.start_ms:
            self.quality.warmup_bars += 1
            return
        if self._awaiting is not None:
            raise FatalError(f"no engine decision arrived for the {self.symbol} bar closing at {self._awaiting}")
        if self.points:
            missing = (bar.start - self.points[-1].ts) // self.interval.ms
            if missing > 0:
                self.quality.gaps += 1
                self.quality.missing_bars += missing
        else:
            costs = (1.0 + self.settings.slippage_rate) * (1.0 + self.settings.fee_rate)
            self._benchmark_units = self.settings.initial_capital / (bar.close * costs)
        self.quality.bars += 1
        self.broker.fill_pending(bar.start, bar.open)
        equity = self.broker.mark(bar.close)
        self.points.append(
            EquityPoint(bar.ts_event, bar.close, equity, self._benchmark_units * bar.close, self.broker.quantity)
        )
        self._awaiting = bar.ts_event

    # -- the decision sink -------------------------------------------------------------------
    async def publish(self, signal: CompositeSignal) -> None:
        if signal.symbol != self.symbol:
            raise FatalError(f"backtest of {self.symbol} received a decision for {signal.symbol}")
        if signal.ts_event != self._awaiting:
            if not self.points or signal.ts_event < self.points[0].ts:
                return  # a warm-up bar's decision, before the traded period
            raise FatalError(f"decision at {signal.ts_event} does not belong to the bar closing at {self._awaiting}")
        self._awaiting = None
        order = self.broker.decide(signal)
        self.decisions.append(
            Decision(
                signal.ts_event,
                signal.signal,
                signal.confidence,
                signal.actionable,
                signal.num_sources,
                None if order is None else order.target_side,
            )
        )

    async def flush(self) -> None:
        return None  # fills are booked as decisions arrive

    async def close(self) -> None:
        return None  # the result stays readable after the run

    # -- the result --------------------------------------------------------------------------
    def result(self, replay: RuntimeStats, threshold: float) -> BacktestResult:
        """Everything the run produced; :class:`InvalidInput` when there was nothing to trade on."""
        if len(self.points) < 2:
            raise InvalidInput(self._why_no_bars(replay))
        last = self.points[-1]
        trades = list(self.broker.trades)
        still_open = self.broker.open_trade(last.close)
        if still_open is not None:
            trades.append(still_open)
        return BacktestResult(
            symbol=self.symbol,
            interval=self.interval,
            settings=self.settings,
            threshold=threshold,
            points=list(self.points),
            decisions=list(self.decisions),
            fills=list(self.broker.fills),
            trades=trades,
            fees_paid=self.broker.fees_paid,
            slippage_paid=self.broker.slippage_paid,
            traded_notional=self.broker.traded_notional,
            unfilled_at_end=self.broker.pending is not None,
            quality=self.quality,
            replay=replay,
        )

    def _why_no_bars(self, replay: RuntimeStats) -> str:
        found = f"found {len(self.points)} {self.interval.value} bar(s) of {self.symbol}"
        if self.start_ms is not None or self.end_ms is not None:
            found += f" between {self.start_ms} and {self.end_ms} (epoch ms)"
        hints = []
        if self.quality.trades_seen:
            hints.append("the prices hold trades but fills need bars: use a kline CSV or a recording with klines")
        if replay.engine.bars_other_interval:
            hints.append(f"{replay.engine.bars_other_interval} bar(s) of another interval: check --interval")
        if self.quality.dead_letters:
            hints.append(f"{self.quality.dead_letters} record(s) were rejected as dead letters")
        return f"backtest needs at least 2 bars; {found}" + (f" ({'; '.join(hints)})" if hints else "")


@dataclass(slots=True)
class BacktestResult:
    """A finished backtest: the curves, the decisions, the fills, the trades and the input's quality."""

    symbol: str
    interval: Interval
    settings: BacktestSettings
    threshold: float
    points: list[EquityPoint]
    decisions: list[Decision]
    fills: list[Fill]
    trades: list[TradeRecord]
    fees_paid: float
    slippage_paid: float
    traded_notional: float
    unfilled_at_end: bool
    quality: DataQuality
    replay: RuntimeStats
    policy: str = "sentiment"  # the engine policy whose decisions were traded

    @property
    def final_equity(self) -> float:
        return self.points[-1].equity

    def _curve_metrics(self, equity: list[float], start_equity: float) -> dict[str, Any]:
        per_year = metrics.periods_per_year(self.interval)
        returns = metrics.period_returns(equity)
        drawdown = metrics.max_drawdown(equity)
        elapsed = self.points[-1].ts - self.points[0].ts
        return {
            "final_equity": equity[-1],
            "total_return": equity[-1] / start_equity - 1.0,
            "cagr": metrics.cagr(start_equity, equity[-1], elapsed),
            "annualised_volatility": metrics.annualised_volatility(returns, per_year),
            "sharpe": metrics.sharpe(returns, per_year),
            "sortino": metrics.sortino(returns, per_year),
            "max_drawdown": drawdown.depth,
            "max_drawdown_duration_bars": drawdown.duration,
            "max_drawdown_duration_days": drawdown.duration * self.interval.ms / 86_400_000,
            "max_drawdown_peak_ts": self.points[drawdown.peak].ts,
            "max_drawdown_trough_ts": self.points[drawdown.trough].ts,
            "max_drawdown_recovered": drawdown.recovery is not None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The report JSON (times in epoch ms; ``null`` where a metric is undefined)."""
        settings = self.settings
        closed = [t.pnl for t in self.trades if t.status == "closed"]
        equity = [p.equity for p in self.points]
        strategy = self._curve_metrics(equity, settings.initial_capital)
        strategy.update(
            {
                "trades": len(closed),
                "open_trades": sum(t.status == "open" for t in self.trades),
                "fills": len(self.fills),
                "win_rate": metrics.win_rate(closed),
                "profit_factor": metrics.profit_factor(closed),
                "turnover": metrics.turnover(self.traded_notional, equity),
                "exposure": sum(p.position != 0.0 for p in self.points) / len(self.points),
                "fees_paid": self.fees_paid,
                "slippage_paid": self.slippage_paid,
                "traded_notional": self.traded_notional,
            }
        )
        benchmark = {"name": "buy_and_hold"}
        benchmark.update(self._curve_metrics([p.benchmark for p in self.points], settings.initial_capital))
        by_signal = {s.value: sum(d.signal == s for d in self.decisions) for s in Signal}
        actionable = {s.value: sum(d.signal == s and d.actionable for d in self.decisions) for s in Signal}
        stats = self.replay.engine
        quality = self.quality
        return {
            "symbol": self.symbol,
            "policy": self.policy,
            "interval": self.interval.value,
            "start_ts": self.points[0].ts,
            "end_ts": self.points[-1].ts,
            "bars": len(self.points),
            "settings": {
                "initial_capital": settings.initial_capital,
                "position_size": settings.position_size,
                "confidence_threshold": self.threshold,
                "fee_bps": settings.fee_bps,
                "slippage_bps": settings.slippage_bps,
                "allow_short": settings.allow_short,
                "fill": "next bar open +/- slippage",
                "periods_per_year": metrics.periods_per_year(self.interval),
                "risk_free_rate": 0.0,
            },
            "strategy": strategy,
            "benchmark": benchmark,
            "signals": {
                "decisions": len(self.decisions),
                "by_signal": by_signal,
                "actionable": actionable,
                "orders": sum(d.target_side is not None for d in self.decisions),
                "unfilled_at_end": int(self.unfilled_at_end),
            },
            "data": {
                "bars_missing": quality.missing_bars,
                "gaps": quality.gaps,
                "warmup_bars": quality.warmup_bars,
                "bars_other_interval": stats.bars_other_interval,
                "news": stats.news,
                "news_scored": stats.sentiment_scores,
                "news_without_symbol": stats.news_unmapped,
                "news_duplicate": stats.news_duplicate,
                "news_before_window": quality.news_before_window,
                "items_after_end": quality.items_after_end,
                "dead_letters": quality.dead_letters,
                "dead_letters_by_source": dict(sorted(quality.dead_letters_by_source.items())),
                "dead_letter_reasons": dict(sorted(quality.dead_letter_reasons.items())),
            },
        }


async def run_backtest(
    items: Iterable[RuntimeItem],
    engine: SignalEngine,
    batcher: MicroBatcher,
    settings: BacktestSettings,
    dead_letters: DeadLetterSink,
    *,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay time-ordered ``items`` through ``engine`` and trade its decisions for ``symbol``."""
    backtester = Backtester(symbol, engine.interval, settings, start_ms=start_ms, end_ms=end_ms)
    counted = _CountingDeadLetters(dead_letters, backtester.quality)
    runtime = Runtime(engine, batcher, RuntimeSinks(counted, decisions=[backtester]), on_progress=on_progress)
    window_ms = engine.settings.aggregator.window_ms
    report = await runtime.run(backtester.observe(items, news_horizon_ms=window_ms))
    result = backtester.result(report, engine.settings.aggregator.threshold)
    result.policy = engine.policy.name
    return result
