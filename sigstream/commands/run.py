"""``sigstream run``: the live service (embedded bus and in-memory store unless --kafka/--redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.settings import Settings, flag, load_settings, with_overrides

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
        from sigstream.modes.run import run_to_kafka

        asyncio.run(run_to_kafka(settings, chosen, duration))
        return
    backfilling = backfill != 0 and "bybit" in chosen
    from sigstream.modes.run import run_embedded

    asyncio.run(run_embedded(settings, chosen, signals_out, dead_letters_out, duration, backfilling, record))


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


def register(app: typer.Typer) -> None:
    app.command("run")(run)
