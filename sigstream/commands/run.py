"""``sigstream run``: the live service (embedded bus and in-memory store unless --kafka/--redis)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from adapters.bybit.config import BybitSettings
from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.modes.sentiment import with_model_flag
from sigstream.settings import Settings, check_bootstrap, check_url, flag, load_settings, with_overrides

KNOWN_SOURCES = ("bybit", "rss")
BYBIT_WS_URL = BybitSettings.model_fields["ws_url"].default


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
        None, "--rest-url", help="REST base URL for the backfill and the gap healing [default: Bybit's, but only "
        "with Bybit's own websocket: with another --bybit-url there is no REST call unless this is given]."
    ),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
    dashboard_port: int | None = typer.Option(
        None, "--dashboard-port", help="Serve the live dashboard page on this port (its URL goes to stderr)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Sentiment model: an adapter folder or full model (path or hub id), or module:callable "
        "[default: the configured model and adapter].",
    ),
    record: Path | None = typer.Option(
        None, "--record", help="Write every raw Bybit frame and news item received, with its receive time, to this "
        "recording (.jsonl or .jsonl.gz); `sigstream replay` of it prints the same signals.",
    ),
) -> None:
    """Stream live ticks (Bybit v5 websocket) and news (RSS/Atom) into the engine and emit signals.

    Signals are printed as JSON lines on stdout. Ctrl-C or SIGTERM flushes the pending news batch,
    publishes what it produced, and exits (Ctrl-C with status 130, SIGTERM 0). After a websocket reconnect
    the closed bars missed meanwhile are fetched over REST and processed (and recorded) before the stream
    goes on; a failed fetch is a warning. A source that cannot connect at all gives up after
    SIGSTREAM_BYBIT__MAX_CONNECT_ATTEMPTS / SIGSTREAM_RSS__MAX_CONNECT_ATTEMPTS tries (exit 1, with why).
    Outputs (--signals-out, --record, --dead-letters-out) are appended as the run goes, complete up to its
    last line; the final "stopped: ..." line on stderr says the run ended cleanly.
    """
    chosen = [s.strip() for s in sources.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in KNOWN_SOURCES]
    if unknown or not chosen:
        raise InvalidInput(f"unknown source(s) {unknown or chosen}; choose from {', '.join(KNOWN_SOURCES)}")
    if feeds and "rss" not in chosen:
        raise InvalidInput("--feed is only used with --sources rss")
    if kafka and (redis or signals_out or dead_letters_out or metrics_port or record or model):
        raise InvalidInput("--kafka only publishes raw ticks and news (the workers compute signals): --redis, "
                           "--signals-out, --dead-letters-out, --metrics-port, --record and --model do not apply")
    if kafka and dashboard_port:
        raise InvalidInput("--dashboard-port shows the in-process engine; with --kafka the workers compute the "
                           "signals: watch them with `sigstream dashboard --kafka ...`")
    if record is not None and not record.name.endswith((".jsonl", ".jsonl.gz")):
        raise InvalidInput(f"--record {record}: a recording is named .jsonl or .jsonl.gz")
    settings = run_settings(
        load_settings(), chosen, symbols=symbols, interval=interval, feeds=feeds, bybit_url=bybit_url,
        backfill=backfill, rest_url=rest_url, metrics_port=metrics_port, kafka=kafka, redis=redis,
        dashboard_port=dashboard_port,
    )
    if kafka:
        from sigstream.modes.run import run_to_kafka

        _exit_on_ctrl_c(asyncio.run(run_to_kafka(settings, chosen, duration)))
        return
    backfilling = backfill != 0 and "bybit" in chosen and _rest_allowed(settings)
    if "bybit" in chosen and not _rest_allowed(settings):
        typer.echo(f"note: --bybit-url {settings.bybit.ws_url} is not Bybit's and no --rest-url was given: no REST "
                   "backfill and no gap healing", err=True)
    settings, spec = with_model_flag(settings, model)
    from sigstream.modes.run import run_embedded

    _exit_on_ctrl_c(asyncio.run(run_embedded(settings, chosen, signals_out, dead_letters_out, duration, backfilling,
                                             record, model_spec=spec)))


def _exit_on_ctrl_c(signum: int | None) -> None:
    # Flushed and closed already; the status says the run was interrupted (128 + SIGINT), as a shell expects.
    if signum == signal.SIGINT:
        raise SystemExit(130)


def _rest_allowed(settings: Settings) -> bool:
    """REST goes to Bybit's real API only when the websocket is Bybit's too: a local or other --bybit-url with no
    --rest-url (SIGSTREAM_CCXT__REST_URL) must not warm up or heal from the real exchange."""
    return settings.ccxt.rest_url is not None or settings.bybit.ws_url == BYBIT_WS_URL


def run_settings(
    settings: Settings, chosen: list[str], *, symbols: str | None = None, interval: Interval | None = None,
    feeds: list[str] | None = None, bybit_url: str | None = None, backfill: int | None = None,
    rest_url: str | None = None, metrics_port: int | None = None, kafka: str | None = None, redis: str | None = None,
    dashboard_port: int | None = None,
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
        flag("--dashboard-port", dashboard_port, "dashboard.port"),
        flag("--kafka", kafka, "kafka.bootstrap"),
        flag("--redis", redis, "redis.url"),
    )
    if not settings.bybit.symbols:
        raise InvalidInput("--symbols: no symbol given")
    if "rss" in chosen and not settings.rss.feeds:
        raise InvalidInput("--sources rss needs a feed: --feed URL or SIGSTREAM_RSS__FEEDS")
    # Every URL is checked here, before a model or a connection is opened.
    if "bybit" in chosen:
        check_url("--bybit-url" if bybit_url else "SIGSTREAM_BYBIT__WS_URL", settings.bybit.ws_url, ("ws", "wss"))
    if "rss" in chosen:
        for feed in settings.rss.feeds:
            check_url("--feed" if feeds else "SIGSTREAM_RSS__FEEDS", feed, ("http", "https"))
    if settings.ccxt.rest_url is not None:
        check_url("--rest-url" if rest_url else "SIGSTREAM_CCXT__REST_URL", settings.ccxt.rest_url,
                  ("http", "https"))
    if kafka:
        check_bootstrap("--kafka", settings.kafka.bootstrap)
    if settings.redis.url is not None and not kafka:
        check_url("--redis" if redis else "SIGSTREAM_REDIS__URL", settings.redis.url, ("redis", "rediss", "unix"))
    return settings


def register(app: typer.Typer) -> None:
    app.command("run")(run)
