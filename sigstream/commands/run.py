"""``sigstream run``: the live service (embedded bus and in-memory store unless --kafka/--redis)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from adapters.files.sink import DeadLetterFile, JsonlSignalSink, RecordingWriter, StdoutSignalSink
from adapters.inprocess.client import InProcessBus
from adapters.inprocess.sink import BusSignalSink
from adapters.inprocess.store import InMemoryFeatureStore
from adapters.prometheus.sink import serve_metrics
from adapters.system.clock import WallClock
from engine.batcher import MicroBatcher
from engine.errors import FatalError, InvalidInput, TransientError
from engine.events import Bar, Interval
from engine.pipeline import SignalEngine
from engine.runtime import Runtime, RuntimeSinks
from sigstream.live import GapHealer, merged_arrivals, run_live
from sigstream.settings import Settings, flag, load_settings, with_overrides

console = Console(stderr=True)
KNOWN_SOURCES = ("bybit", "rss")


def run(
    sources: str = typer.Option("bybit", "--sources", help="Comma-separated: bybit, rss."),
    symbols: str | None = typer.Option(
        None, "--symbols", help="Comma-separated Bybit symbols [default: SIGSTREAM_BYBIT__SYMBOLS, else BTCUSDT]."
    ),
    interval: Interval | None = typer.Option(
        None, "--interval", help="Kline interval for features [default: SIGSTREAM_BYBIT__INTERVAL, else 1m]."
    ),
    feeds: list[str] = typer.Option(
        [], "--feed", help="RSS/Atom feed URL (repeatable) for --sources rss [default: SIGSTREAM_RSS__FEEDS]."
    ),
    bybit_url: str | None = typer.Option(None, "--bybit-url", help="Websocket URL (default: Bybit linear)."),
    kafka: str | None = typer.Option(None, "--kafka", help="Publish raw frames/news to Kafka for workers."),
    redis: str | None = typer.Option(
        None, "--redis", help="Cache features in Redis (redis://host:port/0) [default: SIGSTREAM_REDIS__URL, else none]"
    ),
    signals_out: Path | None = typer.Option(None, "--signals-out", help="Also append signals as JSONL here."),
    dead_letters_out: Path | None = typer.Option(None, "--dead-letters-out", help="JSONL of rejected records."),
    duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds."),
    backfill: int | None = typer.Option(
        None, "--backfill", min=0, max=999,
        help="Closed bars fetched over REST (ccxt) to warm the features before streaming; 0 skips "
        "[default: SIGSTREAM_CCXT__LIMIT, else 200]. It does not turn off healing the gap a websocket reconnect "
        "leaves (the missed bars, fetched over REST): SIGSTREAM_CCXT__HEAL_GAPS=false does.",
    ),
    rest_url: str | None = typer.Option(
        None, "--rest-url", help="REST base URL for the backfill and the gap healing (default: Bybit)."
    ),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
    record: Path | None = typer.Option(
        None, "--record", help="Write every raw Bybit frame and news item received, with its receive time, to this "
        "recording (.jsonl or .jsonl.gz); `sigstream replay` of it prints the same signals.",
    ),
) -> None:
    """Stream live ticks (Bybit v5 websocket) and news (RSS/Atom) into the engine and emit signals.

    Signals are printed as JSON lines on stdout. Ctrl-C or SIGTERM flushes the pending news batch,
    publishes what it produced, and exits. After a websocket reconnect the closed bars missed meanwhile are
    fetched over REST and processed (and recorded) before the stream goes on; a failed fetch is a warning.
    """
    chosen = [s.strip() for s in sources.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in KNOWN_SOURCES]
    if unknown or not chosen:
        raise InvalidInput(f"unknown source(s) {unknown or chosen}; choose from {', '.join(KNOWN_SOURCES)}")
    if feeds and "rss" not in chosen:
        raise InvalidInput("--feed is only used with --sources rss")
    if kafka and (redis or signals_out or dead_letters_out or metrics_port or record):
        raise InvalidInput("--kafka only publishes raw ticks and news (the workers compute signals): "
                           "--redis, --signals-out, --dead-letters-out, --metrics-port and --record do not apply")
    if record is not None and not record.name.endswith((".jsonl", ".jsonl.gz")):
        raise InvalidInput(f"--record {record}: a recording is named .jsonl or .jsonl.gz")
    settings = run_settings(
        load_settings(), chosen, symbols=symbols, interval=interval, feeds=feeds, bybit_url=bybit_url,
        backfill=backfill, rest_url=rest_url, metrics_port=metrics_port, kafka=kafka, redis=redis,
    )
    if kafka:
        asyncio.run(_ingest(settings, chosen, duration))
        return
    backfilling = backfill != 0 and "bybit" in chosen
    asyncio.run(_run_embedded(settings, chosen, signals_out, dead_letters_out, duration, backfilling, record))


def run_settings(
    settings: Settings, chosen: list[str], *, symbols: str | None = None, interval: Interval | None = None,
    feeds: list[str] | None = None, bybit_url: str | None = None, backfill: int | None = None,
    rest_url: str | None = None, metrics_port: int | None = None, kafka: str | None = None, redis: str | None = None,
) -> Settings:
    """``settings`` (from the environment) with ``run``'s flags applied; flags win, None keeps the setting.

    The Bybit symbols and interval are the run's: the backfill (ccxt) and the engine take them too.
    """
    settings = with_overrides(
        settings,
        flag("--symbols", symbols if symbols is not None else settings.bybit.symbols, "bybit.symbols", "ccxt.symbols"),
        flag("--interval", interval or settings.bybit.interval, "bybit.interval", "engine.interval", "ccxt.interval"),
        flag("--feed", tuple(feeds or ()) or None, "rss.feeds"),
        flag("--bybit-url", bybit_url, "bybit.ws_url"),
        # --backfill 0 skips the warm-up (run decides that); the limit itself stays a valid one.
        flag("--backfill", None if backfill is None else max(backfill, 1), "ccxt.limit"),
        flag("--rest-url", rest_url, "ccxt.rest_url"),
        flag("--metrics-port", metrics_port, "metrics.port"),
        flag("--kafka", kafka, "kafka.bootstrap"),
        flag("--redis", redis, "redis.url"),
    )
    if not settings.bybit.symbols:
        raise InvalidInput("--symbols: no symbol given")
    if "rss" in chosen and not settings.rss.feeds:
        raise InvalidInput("--sources rss needs a feed: --feed URL or SIGSTREAM_RSS__FEEDS")
    return settings


async def _run_embedded(
    settings: Settings, chosen: list[str], signals_out: Path | None,
    dead_letters_out: Path | None, duration: float | None, backfill: bool, record: Path | None,
) -> None:
    from adapters.model import load_sentiment_model

    clock = WallClock()
    bus = InProcessBus()
    dead = DeadLetterFile(dead_letters_out)
    engine = SignalEngine(settings.engine, symbols=frozenset(settings.bybit.symbols))
    batcher = MicroBatcher(load_sentiment_model(settings.model), settings.engine.batcher)
    store: Any = InMemoryFeatureStore()
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
    warmed = await _backfill(settings, engine, dead) if backfill and "bybit" in chosen else []
    healer, rest = _gap_healer(settings, chosen, dead)
    if healer is not None:
        healer.seed(warmed)
    ticks, news = _sources(settings, chosen, dead, clock)
    runtime = Runtime(engine, batcher, RuntimeSinks(dead, signals=signal_sinks, store=store))
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
        await run_live(runtime, arrivals, max_wait_ms=settings.engine.batcher.max_wait_ms, recorder=recorder,
                       healer=healer)
    finally:
        if rest is not None:
            await rest.close()
        if recorder is not None:
            recorder.close()
        if hasattr(store, "close"):
            await store.close()
        dead.close()
        if jsonl is not None:
            jsonl.close()
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


def _stop_event(duration: float | None) -> asyncio.Event:
    """Set by Ctrl-C, SIGTERM or the end of ``--duration``: the service then flushes and exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
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


async def _ingest(settings: Settings, chosen: list[str], duration: float | None) -> None:
    """Publish live ticks and news onto market.raw / news.raw; `sigstream worker` processes them."""
    from sigstream.ingest import QueueDeadLetters, live_items, publish_items

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


def register(app: typer.Typer) -> None:
    app.command("run")(run)
