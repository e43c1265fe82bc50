"""``sigstream run``: the live service (embedded bus and in-memory store unless --kafka/--redis)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from adapters.files.sink import DeadLetterFile, JsonlSignalSink
from adapters.inprocess.client import InProcessBus
from adapters.inprocess.sink import BusSignalSink
from adapters.inprocess.store import InMemoryFeatureStore
from adapters.prometheus.sink import serve_metrics
from adapters.system.clock import WallClock
from engine.batcher import MicroBatcher
from engine.config import parse_symbol_list
from engine.errors import FatalError, InvalidInput, TransientError
from engine.events import Interval
from engine.pipeline import SignalEngine
from sigstream.live import LiveService, LiveSinks
from sigstream.settings import Settings, load_settings, validated

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
    redis: str | None = typer.Option(None, "--redis", help="Cache features in Redis (redis://host:port/0)."),
    signals_out: Path | None = typer.Option(None, "--signals-out", help="Also append signals as JSONL here."),
    dead_letters_out: Path | None = typer.Option(None, "--dead-letters-out", help="JSONL of rejected records."),
    duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds."),
    backfill: int | None = typer.Option(
        None, "--backfill", min=0, max=999,
        help="Closed bars fetched over REST (ccxt) to warm the features before streaming; 0 skips "
        "[default: SIGSTREAM_CCXT__LIMIT, else 200].",
    ),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST base URL for the backfill (default: Bybit)."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
) -> None:
    """Stream live ticks (Bybit v5 websocket) and news (RSS/Atom) into the engine and emit signals.

    Signals are printed as JSON lines on stdout. Ctrl-C or SIGTERM flushes the pending news batch,
    publishes what it produced, and exits.
    """
    chosen = [s.strip() for s in sources.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in KNOWN_SOURCES]
    if unknown or not chosen:
        raise InvalidInput(f"unknown source(s) {unknown or chosen}; choose from {', '.join(KNOWN_SOURCES)}")
    if feeds and "rss" not in chosen:
        raise InvalidInput("--feed is only used with --sources rss")
    if kafka and (redis or signals_out or dead_letters_out or metrics_port):
        raise InvalidInput("--kafka only publishes raw ticks and news (the workers compute signals): "
                           "--redis, --signals-out, --dead-letters-out and --metrics-port do not apply")
    settings = run_settings(
        load_settings(), chosen, symbols=symbols, interval=interval, feeds=feeds, bybit_url=bybit_url,
        backfill=backfill, rest_url=rest_url, metrics_port=metrics_port,
    )
    if kafka:
        _run_ingest(settings, chosen, kafka, duration)
        return
    backfilling = backfill != 0 and "bybit" in chosen
    asyncio.run(_run_embedded(settings, chosen, redis, signals_out, dead_letters_out, duration, backfilling))


def run_settings(
    settings: Settings, chosen: list[str], *, symbols: str | None = None, interval: Interval | None = None,
    feeds: list[str] | None = None, bybit_url: str | None = None, backfill: int | None = None,
    rest_url: str | None = None, metrics_port: int | None = None,
) -> Settings:
    """``settings`` (from the environment) with ``run``'s flags applied; flags win, None keeps the setting."""
    feeds = feeds or []
    # Flags override the environment's settings; each section is validated again with them.
    symbol_list = parse_symbol_list(symbols) if symbols is not None else settings.bybit.symbols
    interval = interval or settings.bybit.interval
    if backfill is None:
        backfill = settings.ccxt.limit
    bybit_update: dict[str, Any] = {"symbols": symbol_list, "interval": interval}
    if bybit_url:
        bybit_update["ws_url"] = bybit_url
    ccxt_update: dict[str, Any] = {"symbols": symbol_list, "interval": interval, "limit": max(backfill, 1)}
    if rest_url:
        ccxt_update["rest_url"] = rest_url
    rss_update: dict[str, Any] = {"feeds": tuple(feeds)} if feeds else {}
    settings = settings.model_copy(update={
        "bybit": validated(type(settings.bybit), **(settings.bybit.model_dump() | bybit_update)),
        "engine": settings.engine.model_copy(update={"interval": interval}),
        "rss": validated(type(settings.rss), **(settings.rss.model_dump() | rss_update)),
        "metrics": settings.metrics.model_copy(update={"port": metrics_port}) if metrics_port else settings.metrics,
        "ccxt": validated(type(settings.ccxt), **(settings.ccxt.model_dump() | ccxt_update)),
    })
    if not settings.bybit.symbols:
        raise InvalidInput("--symbols: no symbol given")
    if "rss" in chosen and not settings.rss.feeds:
        raise InvalidInput("--sources rss needs a feed: --feed URL or SIGSTREAM_RSS__FEEDS")
    return settings


async def _run_embedded(
    settings: Settings, chosen: list[str], redis: str | None,
    signals_out: Path | None, dead_letters_out: Path | None, duration: float | None, backfill: bool,
) -> None:
    from adapters.model import load_sentiment_model

    clock = WallClock()
    bus = InProcessBus()
    dead = DeadLetterFile(dead_letters_out)
    engine = SignalEngine(settings.engine, symbols=frozenset(settings.bybit.symbols))
    batcher = MicroBatcher(load_sentiment_model(settings.model), settings.engine.batcher)
    store: Any = InMemoryFeatureStore()
    if redis:
        from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore

        # Redis behind in-process state: a Redis outage never stops the service; it reconnects.
        store = ResilientFeatureStore(RedisFeatureStore(settings.redis.model_copy(update={"url": redis})))
        for symbol, bars in (await store.warm_up(settings.bybit.symbols)).items():
            engine.warm(symbol, bars)
    signal_sinks: list[Any] = [BusSignalSink(bus), _StdoutSignalSink()]
    if signals_out:
        signal_sinks.append(JsonlSignalSink(signals_out))
    if backfill and "bybit" in chosen:
        await _backfill(settings, engine, dead)
    ticks, news = _sources(settings, chosen, dead, clock)
    service = LiveService(engine, batcher, LiveSinks(dead, signal_sinks, store=store), clock, ticks=ticks, news=news)
    serve_metrics(settings.metrics, {"engine": lambda: engine.stats, "batcher": lambda: batcher.stats,
                                     "service": lambda: service.stats})
    stop = _stop_event(duration)
    console.print(f"[green]sigstream run[/green]: {', '.join(chosen)} for {', '.join(settings.bybit.symbols)}; "
                  "Ctrl-C to stop")
    stats = await service.run(stop)
    if hasattr(store, "close"):
        await store.close()
    dead.close()
    for sink in signal_sinks:
        if hasattr(sink, "close"):
            sink.close()
    console.print(f"stopped: {stats.market_events} market events, {stats.news} news, {stats.signals} signals, "
                  f"{stats.dead_letters} dead letters")
    if stats.errors:
        # Everything pending was flushed above; the exit status still says a source gave up.
        raise FatalError(f"source(s) failed: {'; '.join(stats.errors)}")


async def _backfill(settings: Settings, engine: SignalEngine, dead: Any) -> None:
    """Warm each symbol's features from recent REST bars; a failure leaves the engine cold, loudly."""
    from adapters.ccxt.source import CcxtBackfillSource

    source = CcxtBackfillSource(settings.ccxt, dead)
    try:
        for symbol in settings.ccxt.symbols:
            bars = await source.backfill(symbol)
            engine.warm(symbol, bars)
            console.print(f"backfilled {len(bars)} {settings.ccxt.interval} bars of {symbol}")
    except TransientError as exc:
        console.print(f"[yellow]backfill failed, starting with cold features: {exc}[/yellow]")
    finally:
        await source.close()


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


def _run_ingest(settings: Settings, chosen: list[str], kafka: str, duration: float | None) -> None:
    """Publish live ticks and news onto market.raw / news.raw; `sigstream worker` processes them."""
    asyncio.run(_ingest(settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"bootstrap": kafka})}), chosen, duration))


async def _ingest(settings: Settings, chosen: list[str], duration: float | None) -> None:
    from sigstream.ingest import QueueDeadLetters, merged_live_events, publish_items

    queue: asyncio.Queue[Any] = asyncio.Queue(10_000)
    ticks, news = _sources(settings, chosen, QueueDeadLetters(queue), WallClock())
    stop = _stop_event(duration)
    console.print(f"[green]sigstream run[/green]: {', '.join(chosen)} -> Kafka {settings.kafka.bootstrap}; "
                  "Ctrl-C to stop")
    failures: list[Exception] = []
    report = await publish_items(merged_live_events(queue, ticks, news, stop, failures), settings.kafka, None)
    console.print(f"published {report.market} market records, {report.news} news, "
                  f"{report.dead_letters} dead letters")
    if failures:
        raise FatalError(f"source(s) failed: {'; '.join(map(str, failures))}")


class _StdoutSignalSink:
    """Signals as JSON lines on stdout, for piping into other tools."""

    def __init__(self) -> None:
        import sys

        from engine.serialization import dumps_line, signal_record

        self._out = sys.stdout.buffer
        self._line = lambda s: dumps_line(signal_record(s))

    async def publish(self, signal: Any) -> None:
        self._out.write(self._line(signal))
        self._out.flush()

    async def flush(self) -> None:
        self._out.flush()


def register(app: typer.Typer) -> None:
    app.command("run")(run)
