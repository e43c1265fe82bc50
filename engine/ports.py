"""Ports: the small Protocols the engine talks to. Adapters implement them.

Each docstring lists the methods an implementation must provide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from engine.events import Bar, CompositeSignal, DeadLetter, Features, Interval, NewsItem, Received, SentimentScore


@runtime_checkable
class Clock(Protocol):
    """Time source. Required: ``now_ms``. Engine code never reads the wall clock directly."""

    def now_ms(self) -> int: ...


class TickSource(Protocol):
    """Venue messages with their market events, in arrival order. Required: ``received``, ``close``.

    A message that cannot be decoded is still yielded (with no events, dead-lettered by the source),
    so a recording of what ``received`` yields holds every message the venue sent. A source that reconnects
    sets ``reconnected`` on the first message of each new connection (a venue does not re-send what it
    published meanwhile: the driver may heal that gap from a :class:`BarBackfill`).
    """

    def received(self) -> AsyncIterator[Received]: ...

    async def close(self) -> None: ...


class BarBackfill(Protocol):
    """Closed bars on demand (a venue's REST API), to heal the gap a reconnect leaves. Required: ``closed_bars``.

    ``closed_bars`` returns the bars of ``symbol`` and ``interval`` that have closed and start after
    ``after_start_ms``, oldest first (as many as one request gives; the newest when the gap is larger).
    It raises (e.g. :class:`engine.errors.TransientError`) when the venue cannot be reached.
    """

    async def closed_bars(self, symbol: str, interval: Interval, after_start_ms: int) -> list[Bar]: ...


class NewsSource(Protocol):
    """News items. Required: ``events``, ``close``."""

    def events(self) -> AsyncIterator[NewsItem]: ...

    async def close(self) -> None: ...


class Sink(Protocol):
    """The lifecycle every output port carries. Required: ``flush``, ``close``.

    ``flush`` hands on everything published so far (to the file, the broker, the cache); ``close`` flushes and
    releases what the sink holds. The driver that built the sinks closes them once, through
    :meth:`engine.runtime.RuntimeSinks.close`, never by probing for a method.
    """

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class FeatureStore(Sink, Protocol):
    """Latest features and a bounded window of recent bars per symbol.

    Required: ``save`` (features plus the bar they came from), ``latest``, ``recent_bars``, and the
    :class:`Sink` lifecycle.
    """

    async def save(self, bar: Bar, features: Features) -> None: ...

    async def latest(self, symbol: str) -> Features | None: ...

    async def recent_bars(self, symbol: str, limit: int) -> list[Bar]: ...


class FeatureSink(Sink, Protocol):
    """Where per-bar features go (files, topics). Required: ``publish`` and the :class:`Sink` lifecycle."""

    async def publish(self, features: Features) -> None: ...


class SentimentSink(Sink, Protocol):
    """Where per-news sentiment scores go. Required: ``publish`` and the :class:`Sink` lifecycle."""

    async def publish(self, score: SentimentScore) -> None: ...


class SignalSink(Sink, Protocol):
    """Where composite signals go. Required: ``publish`` and the :class:`Sink` lifecycle."""

    async def publish(self, signal: CompositeSignal) -> None: ...


class DeadLetterSink(Sink, Protocol):
    """Where bad records go, with their reason. Required: ``publish``, ``count`` (the total so far) and the
    :class:`Sink` lifecycle."""

    async def publish(self, record: DeadLetter) -> None: ...

    @property
    def count(self) -> int: ...


class Recorder(Protocol):
    """Writes what a live run received, in the order it was processed, so that a replay of the file gives
    the same signals. Required: ``record``, ``close``."""

    def record(self, item: Received | NewsItem) -> None: ...

    def close(self) -> None: ...


class SentimentModel(Protocol):
    """Text classifier. Required: ``predict_proba``.

    ``predict_proba`` takes a batch of texts and returns, for each, the probabilities of
    (bearish, neutral, bullish), in that order. It is synchronous and may be slow; the engine's
    micro-batcher calls it off the event loop.
    """

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, float, float]]: ...


class SignalPolicy(Protocol):
    """Turns the evidence at a decision into the signal. Required: ``name``, ``on_news``, ``decide``.

    ``decide`` receives the aggregator's evidence (the news vote with its evidence-aware confidence, the
    symbol's latest features, whether it has market data) and returns the signal to publish: the same
    record with ``signal``, ``confidence`` and ``actionable`` set by the policy (``scores`` and
    ``num_sources`` stay the news vote's). ``on_news`` sees every scored news item, in feed order, before
    the decisions it can affect; a policy that does not read text ignores it. A policy must use nothing
    published at or after a bar decision's time, so every mode (replay, backtest, run, worker) gets the
    same signals from the same input.
    """

    @property
    def name(self) -> str: ...

    def on_news(self, item: NewsItem) -> None: ...

    def decide(self, evidence: CompositeSignal) -> CompositeSignal: ...


class DirectionModel(Protocol):
    """Next-bar direction from the bar's news and features. Required: ``predict_proba``.

    ``predict_proba`` takes the texts of the news published in the bar's window (possibly none) and the
    ten features, and returns the probabilities of (down, flat, up) for the next bar's return.
    """

    def predict_proba(self, texts: Sequence[str], features: Features) -> tuple[float, float, float]: ...
