"""``sigstream testserver``: the protocol-faithful local servers of :mod:`testkit`, as a stable command.

Contract (other tools rely on it): the first line of stdout is the URL served, flushed; the server runs
until SIGINT or SIGTERM and then exits 0; bad input exits 2 with one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape

from adapters.bybit.parsing import parse_interval
from engine.errors import InvalidInput
from engine.events import Interval

testserver_app = typer.Typer(
    help=(
        "Local servers that speak the protocols sigstream reads (for tests, demos and fault drills). "
        "Each prints the URL it serves as the first line of stdout and runs until Ctrl-C or SIGTERM."
    ),
    no_args_is_help=True,
)

_INTERVALS = "|".join(i.value for i in Interval)
T = TypeVar("T")


# Help texts: one line per paragraph (the help renderer keeps line breaks), rich markup escaped.
BYBIT_HELP = escape(
    "Serve Bybit's v5 public websocket (ws://HOST:PORT/v5/public/linear), replaying a recording or a kline CSV."
    "\n\n"
    "It answers subscribe, unsubscribe and ping as Bybit does and sends each connection only the topics it "
    "subscribed to (an order book snapshot and the last ticker first, as Bybit does). The replay waits while "
    "no client is subscribed, and every frame reaches a subscribed client exactly once, across drops and "
    "reconnects. Give exactly one of --recording FILE or --klines CSV; --symbol and --interval default from a "
    "file name like BTCUSDT_1m.csv."
    "\n\n"
    'Faults on command: a client sends {"op": "control", "args": [COMMAND, ...]}, COMMAND one of: '
    "drop (abort every connection), stall [seconds] (send and answer nothing), resume, malformed (send "
    "broken JSON), skip_seq [topic] (swallow the next book delta), pause, play."
    "\n\n"
    "Example: sigstream testserver bybit --port 0 --klines BTCUSDT_1m.csv --symbol BTCUSDT --interval 1m "
    "--pace-ms 100 prints ws://127.0.0.1:PORT/v5/public/linear; then: sigstream run --sources bybit "
    "--symbols BTCUSDT --backfill 0 --bybit-url ws://127.0.0.1:PORT/v5/public/linear"
)
RSS_HELP = escape(
    "Serve a news CSV as a growing RSS 2.0 feed (http://HOST:PORT/feed.xml; the same items as Atom at /atom.xml)."
    "\n\n"
    "Items are published in publish-time order, oldest first: the first at start, then one more every "
    "--pace-ms until all are out (then the feed stays as it is). The feed lists every item published so far, "
    "newest first, as real feeds do (--window N: only the newest N). Each item keeps its CSV date as pubDate, "
    "its url as link and guid (a digest of title and date when it has no url), and its text as description. "
    "ETag and Last-Modified change with each new item; a conditional GET of an unchanged feed gets "
    "304 Not Modified. Rows without a title or with an unparseable date are left out (counted on stderr)."
    "\n\n"
    "Example: sigstream testserver rss --port 0 --news cryptonews.csv --pace-ms 500 prints "
    "http://127.0.0.1:PORT/feed.xml; then: sigstream run --sources rss --feed http://127.0.0.1:PORT/feed.xml"
)


def _port(port: int | None) -> int:
    if port is None:
        raise InvalidInput("--port is required (0 picks a free port)")
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be 0..65535, got {port}")
    return port


def _pace_s(pace_ms: float) -> float:
    if pace_ms < 0:
        raise InvalidInput(f"--pace-ms must be >= 0, got {pace_ms:g}")
    return pace_ms / 1000.0


def _existing_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise InvalidInput(f"{flag} {path}: no such file")
    return path


def _read(path: Path, load: Callable[[], T]) -> T:
    """Run a loader; a file that cannot be read or decoded is bad input, in one line."""
    try:
        return load()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from None


def _interval(text: str) -> Interval:
    """Engine spelling (1m, 5m, 15m, 1h, 1d) or Bybit's (1, 5, 15, 60, D)."""
    if text in {interval.value for interval in Interval}:
        return Interval(text)
    try:
        return parse_interval(text)
    except InvalidInput:
        raise InvalidInput(f"--interval {text!r}: expected one of {_INTERVALS}") from None


def _until_stopped() -> asyncio.Event:
    """Set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _announce(url: str, detail: str) -> None:
    print(url, flush=True)  # the first stdout line: scripts and tests read the URL from it
    typer.echo(f"{detail}; Ctrl-C or SIGTERM stops it", err=True)


def _listen_error(host: str, port: int, exc: OSError) -> InvalidInput:
    return InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@testserver_app.command("bybit", help=BYBIT_HELP)
def bybit(
    port: int | None = typer.Option(None, "--port", help="Port to listen on (required); 0 picks a free one."),
    recording: Path | None = typer.Option(
        None, "--recording", help="JSONL(.gz) recording; its bybit frames are replayed (news lines skipped)."
    ),
    klines: Path | None = typer.Option(
        None, "--klines", help="Kline CSV (timestamp|start,open,high,low,close,volume), sent as confirmed klines."
    ),
    symbol: str | None = typer.Option(
        None, "--symbol", help="Symbol of --klines (default: from a file name like BTCUSDT_1m.csv)."
    ),
    interval: str | None = typer.Option(
        None,
        "--interval",
        help=f"Interval of --klines: {_INTERVALS}, or Bybit's 1|5|15|60|D (default: from the file name).",
    ),
    pace_ms: float = typer.Option(
        0.0, "--pace-ms", help="Delay before each frame, in ms (0: as fast as subscribers take them)."
    ),
    speed: float | None = typer.Option(
        None, "--speed", help="Replay at N x the recorded receive-time spacing (instead of --pace-ms)."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Replay only the first N kline rows."),
    realtime_loss: bool = typer.Option(
        False, "--realtime-loss",
        help="Venue semantics: once the first client subscribes, frames go out when due; those due while no "
        "client is subscribed (or queued to one that drops) are lost, as on Bybit, instead of re-sent.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
) -> None:
    """Serve Bybit's v5 public websocket, replaying a recording or a kline CSV (help: BYBIT_HELP)."""
    from testkit.bybit_ws import BybitTestServer, load_kline_csv, load_recording

    chosen_port = _port(port)
    pace_s = _pace_s(pace_ms)
    if (recording is None) == (klines is None):
        raise InvalidInput("give exactly one of --recording FILE or --klines CSV")
    if speed is not None and speed <= 0:
        raise InvalidInput(f"--speed must be > 0, got {speed:g}")
    if recording is not None:
        if symbol or interval or limit is not None:
            raise InvalidInput("--symbol, --interval and --limit go with --klines, not --recording")
        path = _existing_file(recording, "--recording")
        entries = _read(path, lambda: load_recording(path))
    else:
        assert klines is not None
        path = _existing_file(klines, "--klines")
        resolved = _interval(interval) if interval else None
        if limit is not None and limit < 1:
            raise InvalidInput(f"--limit must be >= 1, got {limit}")
        entries = _read(path, lambda: load_kline_csv(path, symbol, resolved, limit))
    what = str(path)
    if not entries:
        raise InvalidInput(f"{what}: no bybit frames to replay")

    async def serve() -> None:
        server = BybitTestServer(
            entries, host=host, port=chosen_port, pace_s=pace_s, speed=speed, realtime_loss=realtime_loss
        )
        try:
            await server.start()
        except OSError as exc:
            raise _listen_error(host, chosen_port, exc) from None
        try:
            stop = _until_stopped()
            loss = "; realtime loss: frames due while nobody listens are dropped" if realtime_loss else ""
            _announce(server.url, f"bybit test server: {len(entries)} frames from {what}{loss}")
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(serve())


@testserver_app.command("rss", help=RSS_HELP)
def rss(
    port: int | None = typer.Option(None, "--port", help="Port to listen on (required); 0 picks a free one."),
    news: Path | None = typer.Option(
        None, "--news", help="News CSV in the cryptonews.csv layout (';'-separated; date and title columns)."
    ),
    pace_ms: float = typer.Option(
        1000.0, "--pace-ms", help="Publish one more item every N ms; 0 publishes all at once."
    ),
    window: int = typer.Option(0, "--window", help="List only the newest N published items (0: all of them)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
) -> None:
    """Serve a news CSV as a growing RSS 2.0 feed (help: RSS_HELP)."""
    from testkit.rss_http import RssTestServer, load_news_csv

    chosen_port = _port(port)
    pace_s = _pace_s(pace_ms)
    if news is None:
        raise InvalidInput("--news CSV is required")
    if window < 0:
        raise InvalidInput(f"--window must be >= 0, got {window}")
    path = _existing_file(news, "--news")
    items, bad = _read(path, lambda: load_news_csv(path))
    if not items:
        raise InvalidInput(f"{news}: no usable news rows" + (f" ({bad} without title or date)" if bad else ""))

    async def serve() -> None:
        first = len(items) if pace_s == 0 else 1
        server = RssTestServer(items[:first], host=host, port=chosen_port, window=window or None)
        try:
            await server.start()
        except OSError as exc:
            raise _listen_error(host, chosen_port, exc) from None
        try:
            stop = _until_stopped()
            skipped = f", {bad} unusable row(s) left out" if bad else ""
            _announce(server.url, f"rss test server: {len(items)} items from {news}{skipped}; atom: {server.atom_url}")
            for item in items[first:]:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pace_s)
                if stop.is_set():
                    break
                server.add_items([item])
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(serve())


def register(app: typer.Typer) -> None:
    app.add_typer(testserver_app, name="testserver")
