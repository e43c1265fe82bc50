"""The live driver: live sources, merged in arrival order, into the one :class:`engine.runtime.Runtime`.

It differs from replay only in its input (websockets and feeds instead of files) and in one timer:
news that no bar follows soon is scored once it has waited ``max_wait_ms``. That changes no signal
(the runtime applies pending news in arrival order whenever it is scored), it only bounds latency.
With a :class:`engine.ports.Recorder`, every message and news item is written just before it is
processed, so ``sigstream replay`` of the recording gives the signals this run printed.

Gaps: a venue does not re-send what it published while a websocket was down. With a :class:`GapHealer`,
the first message of a new connection (``Received.reconnected``) makes the driver fetch the closed bars
after the last one it fed, per symbol, from a :class:`engine.ports.BarBackfill`, and feed (and record) them
as venue messages before that message. A bar the websocket sends again later is not newer than the last
one fed, so the engine drops it as stale (``bars_stale``). A failed backfill is logged and counted; the gap
stays and the service goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from adapters.files.sink import DeadLetterFile, JsonlSignalSink, RecordingWriter, StdoutSignalSink
from adapters.inprocess.client import InProcessBus
from adapters.inprocess.sink import BusSignalSink
from adapters.inprocess.store import InMemoryFeatureStore
from adapters.prometheus.server import serve_metrics
from adapters.system.clock import WallClock
from engine.bars import is_newer
from engine.batcher import MicroBatcher
from engine.errors import FatalError, TransientError
from engine.events import Bar, Interval, NewsItem, Received
from engine.pipeline import SignalEngine
from engine.ports import BarBackfill, FeatureStore, NewsSource, Recorder, TickSource
from engine.runtime import Runtime, RuntimeSinks
from sigstream.modes.sentiment import DEFAULT_MODEL, load_model
from sigstream.settings import Settings

log = logging.getLogger(__name__)
console = Console(stderr=True)

Arrival = Received | NewsItem


async def merged_arrivals(
    queue: asyncio.Queue[Any],
    ticks: Sequence[TickSource],
    news: Sequence[NewsSource],
    stop: asyncio.Event,
    failures: list[str] | None = None,
) -> AsyncIterator[Arrival]:
    """Interleave live sources in arrival order until ``stop``; sources are closed on the way out.

    A source that fails is logged at once and appended to ``failures`` as ``"market: reason"`` or
    ``"news: reason"`` (the others keep running). What arrived before the sources closed is still
    yielded, never dropped.
    """
    failures = [] if failures is None else failures
    done = object()

    async def pump(kind: str, stream: AsyncIterator[Any]) -> None:
        # The end marker is only for a source that ends or fails by itself. A pump cancelled at stop must not
        # wait to put it: the queue may be full and nobody reads it any more.
        try:
            async for item in stream:
                await queue.put(item)
        except Exception as exc:
            failures.append(f"{kind}: {exc}")
            log.error("%s source stopped: %s", kind, exc)
        await queue.put(done)

    streams = [("market", t.received()) for t in ticks] + [("news", n.events()) for n in news]
    pumps = [asyncio.create_task(pump(kind, stream)) for kind, stream in streams]
    stopper = asyncio.create_task(stop.wait())
    running = len(pumps)
    try:
        while running:
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                # Stop wins even with a backlog (both can finish in one turn); what is queued is drained below.
                if not getter.done():
                    getter.cancel()
                elif (item := getter.result()) is not done:
                    yield item
                break
            item = getter.result()
            if item is done:
                running -= 1
                continue
            yield item
    finally:
        for tick_source in ticks:
            await tick_source.close()
        for news_source in news:
            await news_source.close()
        for task in (*pumps, stopper):
            task.cancel()
        await asyncio.gather(*pumps, stopper, return_exceptions=True)  # cancelled; failures were recorded
        while not queue.empty():
            item = queue.get_nowait()
            if item is not done:
                yield item


@dataclass(slots=True)
class HealStats:
    """What gap healing did: the end-of-run summary and the metrics."""

    reconnects: int = 0  # reconnects the driver was told of
    gaps: int = 0  # symbol backfills after a reconnect that found missed bars
    bars: int = 0  # bars backfilled (fed and recorded)
    failures: int = 0  # backfills that failed: a gap may remain


class GapHealer:
    """The closed bars a reconnect made the run miss, fetched from a :class:`engine.ports.BarBackfill`.

    It follows the start of the last bar fed per symbol (:meth:`note`; :meth:`seed` with a start-up warm-up).
    :meth:`heal` asks the backfill for the closed bars after it and returns them, oldest first, as the venue
    would have sent them (``as_received``, from the venue's adapter), so the driver feeds and records them like
    any message. A symbol with no bar yet is healed from one interval before the first message of the run:
    the stream owed every bar that closed after that. Never returns a bar that is not newer than the last
    one fed, so the runtime never sees one out of order.

    Args:
        backfill: Where the bars come from (REST).
        symbols: The symbols the run trades.
        interval: The bar interval the engine uses.
        as_received: ``(bar, ts_init) -> Received``: the venue message of one bar, received at ``ts_init``.
    """

    def __init__(
        self,
        backfill: BarBackfill,
        symbols: Iterable[str],
        interval: Interval,
        as_received: Callable[[Bar, int], Received],
    ) -> None:
        self.backfill = backfill
        self.symbols = tuple(symbols)
        self.interval = interval
        self.as_received = as_received
        self.stats = HealStats()
        self._last: dict[str, int] = {}
        self._first_ts: int | None = None

    def seed(self, bars: Iterable[Bar]) -> None:
        """Bars the engine was warmed with (not fed): healing starts after them."""
        for bar in bars:
            self.note(bar)

    def note(self, bar: Bar) -> None:
        """A bar was fed to the runtime (or warmed into the engine)."""
        if bar.interval == self.interval and bar.symbol in self.symbols and is_newer(bar, self._last.get(bar.symbol)):
            self._last[bar.symbol] = bar.start

    def arrived(self, ts_init: int) -> None:
        """A message arrived (the first one fixes where the run's stream began)."""
        if self._first_ts is None:
            self._first_ts = ts_init

    async def heal(self, ts_init: int) -> list[Received]:
        """The bars missed before the reconnect message received at ``ts_init``, stamped with that time (they
        are processed just before it, so a recording stays in receive-time order). The driver waits for the
        backfill (bounded by its timeouts and retries); arrivals queue meanwhile."""
        self.stats.reconnects += 1
        healed: list[Received] = []
        for symbol in self.symbols:
            after = self._last.get(symbol)
            if after is None:
                if self._first_ts is None:
                    continue
                after = self._first_ts - self.interval.ms
            try:
                bars = await self.backfill.closed_bars(symbol, self.interval, after)
            except Exception as exc:  # whatever the REST side did (down, refused, unknown symbol): go on
                self.stats.failures += 1
                log.warning("gap backfill of %s after a reconnect failed; %s bars starting after %s may be missing: %s",
                            symbol, self.interval.value, _utc(after), exc)
                continue
            fresh: dict[int, Bar] = {}
            for bar in bars:
                if bar.symbol == symbol and bar.interval == self.interval and is_newer(bar, after):
                    fresh.setdefault(bar.start, bar)
            if not fresh:
                log.info("no %s bar of %s missed during the reconnect", self.interval.value, symbol)
                continue
            ordered = [fresh[start] for start in sorted(fresh)]
            self.stats.gaps += 1
            self.stats.bars += len(ordered)
            log.warning("backfilled %d bars of %s after a reconnect (%s, starting %s to %s)", len(ordered), symbol,
                        self.interval.value, _utc(ordered[0].start), _utc(ordered[-1].start))
            healed.extend(self.as_received(bar, ts_init) for bar in ordered)
        return healed


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def run_live(
    runtime: Runtime,
    arrivals: AsyncIterator[Arrival],
    *,
    max_wait_ms: int,
    recorder: Recorder | None = None,
    healer: GapHealer | None = None,
) -> None:
    """Feed ``arrivals`` to ``runtime`` until they end, then score what is pending and flush.

    Pending news is scored after ``max_wait_ms`` without a new arrival, or at the next bar, whichever
    comes first. With a ``healer``, a message flagged ``reconnected`` is preceded by the bars the
    reconnect missed (see the module docstring).
    """
    next_arrival: asyncio.Task[Arrival] | None = None

    async def process(message: Received) -> None:
        if recorder is not None:
            recorder.record(message)
        for event in message.events:
            await runtime.feed(event)
            if healer is not None and isinstance(event, Bar):
                healer.note(event)

    try:
        while True:
            next_arrival = next_arrival or asyncio.ensure_future(anext(arrivals))
            timeout = max_wait_ms / 1000.0 if runtime.pending else None
            done, _ = await asyncio.wait({next_arrival}, timeout=timeout)
            if not done:
                await runtime.score_pending()
                continue
            try:
                arrival = next_arrival.result()
            except StopAsyncIteration:
                break
            finally:
                if next_arrival.done():
                    next_arrival = None
            if isinstance(arrival, Received):
                if healer is not None:
                    healer.arrived(arrival.ts_init)
                    if arrival.reconnected:
                        for healed in await healer.heal(arrival.ts_init):
                            await process(healed)
                await process(arrival)
            else:
                if recorder is not None:
                    recorder.record(arrival)
                await runtime.feed(arrival)
    finally:
        if next_arrival is not None and not next_arrival.done():
            next_arrival.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_arrival
    await runtime.finish()



async def run_embedded(
    settings: Settings, chosen: list[str], signals_out: Path | None,
    dead_letters_out: Path | None, duration: float | None, backfill: bool, record: Path | None,
    model_spec: str = DEFAULT_MODEL,
) -> int | None:
    """The in-process live service; returns the signal that stopped it (after flushing), None at --duration's end."""

    clock = WallClock()
    bus = InProcessBus()
    dead = DeadLetterFile(dead_letters_out)
    engine = SignalEngine(settings.engine, symbols=frozenset(settings.bybit.symbols))
    from adapters.model.gpu_serving import batcher_settings_for

    model = load_model(model_spec, settings.model)
    # The serving device's max_batch / max_wait_ms defaults where the user set none.
    batcher = MicroBatcher(model, batcher_settings_for(model, settings.engine.batcher))
    store: FeatureStore = InMemoryFeatureStore()
    if settings.redis.url is not None:  # --redis or SIGSTREAM_REDIS__URL
        from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

        # Redis behind in-process state: a Redis outage never stops the service; it reconnects.
        store = ResilientFeatureStore(RedisFeatureStore(settings.redis), InMemoryFeatureStore())
        for symbol, bars in (await store.warm_up(settings.bybit.symbols)).items():
            engine.warm(symbol, bars)
    signal_sinks: list[Any] = [BusSignalSink(bus), StdoutSignalSink()]
    jsonl = JsonlSignalSink(signals_out) if signals_out else None
    if jsonl is not None:
        signal_sinks.append(jsonl)
    page = await _dashboard_page(settings) if settings.dashboard.port else None  # --dashboard-port
    if page is not None:
        signal_sinks.append(page.sink)
    warmed = await _backfill(settings, engine, dead) if backfill and "bybit" in chosen else []
    healer, rest = _gap_healer(settings, chosen, dead)
    if healer is not None:
        healer.seed(warmed)
    ticks, news = _sources(settings, chosen, dead, clock)
    sinks = RuntimeSinks(dead, signals=signal_sinks, store=store, features=[page.sink] if page else [],
                         sentiment=[page.sink] if page else [])
    runtime = Runtime(engine, batcher, sinks)
    groups: dict[str, Any] = {"engine": lambda: engine.stats, "batcher": lambda: batcher.stats,
                              "service": lambda: runtime.stats}
    if healer is not None:
        groups["gaps"] = lambda: healer.stats
    serve_metrics(settings.metrics, groups)
    stop = _stop_event(duration)
    console.print(f"[green]sigstream run[/green]: {', '.join(chosen)} for {', '.join(settings.bybit.symbols)}; "
                  "Ctrl-C to stop")
    recorder = RecordingWriter(record) if record is not None else None
    failures: list[str] = []
    try:
        arrivals = merged_arrivals(asyncio.Queue(settings.bybit.queue_size), ticks, news, stop, failures)
        if page is not None:
            arrivals = page.tap(arrivals)
        await run_live(runtime, arrivals, max_wait_ms=settings.engine.batcher.max_wait_ms, recorder=recorder,
                       healer=healer)
    finally:
        if rest is not None:
            await rest.close()
        if recorder is not None:
            recorder.close()
        await sinks.close()
        if page is not None:
            await page.close()
    stats = runtime.stats
    # Sources dead-letter bad frames themselves: the sink's count is the run's count.
    healed = ""
    if healer is not None and healer.stats.reconnects:
        h = healer.stats
        healed = (f"; {h.reconnects} reconnects: backfilled {h.bars} missed bars in {h.gaps} gaps, {h.failures} "
                  f"backfills failed, {stats.engine.bars_stale} re-sent bars dropped")
    console.print(f"stopped: {stats.market_events} market events, {stats.news} news, {stats.signals} signals, "
                  f"{dead.count} dead letters" + healed
                  + (f"; recorded {recorder.count} lines to {record}" if recorder else ""))
    if failures:
        # Everything pending was flushed above; the exit status still says a source gave up.
        raise FatalError(f"source(s) failed: {'; '.join(failures)}")
    return stop.signum


async def _dashboard_page(settings: Settings) -> Any:
    from sigstream.modes.dashboard import page_for_run

    return await page_for_run(settings)


async def _backfill(settings: Settings, engine: SignalEngine, dead: Any) -> list[Bar]:
    """Warm each symbol's features from recent REST bars (returned); a failure leaves the engine cold, loudly."""
    from adapters.ccxt.source import CcxtBackfillSource

    source = CcxtBackfillSource(settings.ccxt, dead, clock=WallClock())
    warmed: list[Bar] = []
    try:
        for symbol in settings.ccxt.symbols:
            bars = await source.backfill(symbol)
            engine.warm(symbol, bars)
            warmed += bars
            console.print(f"backfilled {len(bars)} {settings.ccxt.interval} bars of {symbol}")
    except TransientError as exc:
        console.print(f"[yellow]backfill failed, starting with cold features: {exc}[/yellow]")
    finally:
        await source.close()
    return warmed


def _gap_healer(settings: Settings, chosen: list[str], dead: Any) -> tuple[GapHealer | None, Any]:
    """The REST backfill of the bars a Bybit reconnect missed (``SIGSTREAM_CCXT__HEAL_GAPS``), and the source to
    close at the end; none without Bybit klines feeding the engine's bars."""
    if not (settings.ccxt.heal_gaps and "bybit" in chosen and settings.bybit.klines
            and settings.engine.bars_from == "klines"):
        return None, None
    from adapters.bybit.source import kline_received
    from adapters.ccxt.source import CcxtBackfillSource

    rest = CcxtBackfillSource(settings.ccxt, dead, clock=WallClock())
    rest.prepare()  # the heavy ccxt import now, not inside a reconnect
    return GapHealer(rest, settings.bybit.symbols, settings.bybit.interval, kline_received), rest


class StopEvent(asyncio.Event):
    """Set by Ctrl-C, SIGTERM or the end of ``--duration``; ``signum`` says which signal, if one did."""

    signum: int | None = None

    def stop_on(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.set()


def _stop_event(duration: float | None) -> StopEvent:
    """Set by Ctrl-C, SIGTERM or the end of ``--duration``: the service then flushes and exits."""
    stop = StopEvent()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.stop_on, signum)
    if duration:
        loop.call_later(duration, stop.set)
    return stop


def _sources(settings: Settings, chosen: list[str], dead: Any, clock: WallClock) -> tuple[list, list]:
    ticks: list[Any] = []
    news: list[Any] = []
    if "bybit" in chosen:
        from adapters.bybit.source import BybitTickSource

        ticks.append(BybitTickSource(settings.bybit, dead, clock=clock))
    if "rss" in chosen:
        from adapters.rss.source import RssNewsSource

        news.append(RssNewsSource(settings.rss, dead, clock=clock))
    return ticks, news


async def run_to_kafka(settings: Settings, chosen: list[str], duration: float | None) -> int | None:
    """Publish live ticks and news onto market.raw / news.raw; `sigstream worker` processes them. Returns the signal
    that stopped it (after flushing), None at --duration's end."""
    from sigstream.modes.publish import QueueDeadLetters, live_items, publish_items

    queue: asyncio.Queue[Any] = asyncio.Queue(10_000)
    ticks, news = _sources(settings, chosen, QueueDeadLetters(queue), WallClock())
    stop = _stop_event(duration)
    console.print(f"[green]sigstream run[/green]: {', '.join(chosen)} -> Kafka {settings.kafka.bootstrap}; "
                  "Ctrl-C to stop")
    failures: list[str] = []
    arrivals = merged_arrivals(queue, ticks, news, stop, failures)
    report = await publish_items(live_items(arrivals), settings.kafka, None)
    console.print(f"published {report.market} market records, {report.news} news, "
                  f"{report.dead_letters} dead letters")
    if failures:
        raise FatalError(f"source(s) failed: {'; '.join(failures)}")
    return stop.signum
