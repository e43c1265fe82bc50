"""A local websocket server that speaks Bybit's v5 public protocol, for tests, demos and replays.

It answers ``subscribe``, ``unsubscribe`` and ``ping`` exactly as Bybit's linear endpoint does, sends a
connection only the topics it subscribed to, and replays frames from a recording (JSONL lines
``{"ts_init": ms, "source": "bybit", "data": <v5 frame>}``; other sources are skipped) or from a kline
CSV converted to ``kline.{interval}.{symbol}`` frames. Like Bybit, it sends an order book snapshot
(and the last ticker snapshot) as soon as a topic is subscribed.

Faults on command, from Python or over the socket with ``{"op": "control", "args": [command, ...]}``:

* ``drop``            abort every connection (a network drop, no closing handshake);
* ``stall [seconds]`` send nothing and answer nothing (not even pings) until resumed;
* ``resume``          end a stall;
* ``malformed``       send a frame of malformed JSON to every connection;
* ``skip_seq [topic]`` swallow the next order book delta, so clients see a gap in ``u``;
* ``pause`` / ``play`` stop and restart the replay.

The replay waits while no client is subscribed to anything, so a reconnecting client loses nothing;
frames for topics that connected clients did not subscribe to are skipped, as Bybit would.

Run ``python -m adapters.bybit.testserver --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from adapters.bybit.frames import klines_to_frames
from engine.errors import InvalidInput
from engine.events import Interval

log = logging.getLogger(__name__)

CONTROL_COMMANDS = frozenset({"drop", "stall", "resume", "malformed", "skip_seq", "pause", "play"})

MALFORMED_FRAME = '{"topic": "kline.1.BTCUSDT", "type": "snapshot", "data": [{"start": 17'

_TOPIC_PATTERNS = (
    re.compile(r"^kline\.(1|3|5|15|30|60|120|240|360|720|D|W|M)\.[A-Z0-9]+$"),
    re.compile(r"^publicTrade\.[A-Z0-9]+$"),
    re.compile(r"^tickers\.[A-Z0-9]+$"),
    re.compile(r"^orderbook\.(1|25|50|100|200|500|1000)\.[A-Z0-9]+$"),
)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One frame to replay and, when known, when it was originally received (epoch ms)."""

    frame: dict[str, Any]
    ts_init: int | None = None


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    conn_id: str
    topics: set[str] = field(default_factory=set)
    book_ready: set[str] = field(default_factory=set)  # books this client has had a snapshot of


@dataclass
class _Book:
    symbol: str
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    u: int = 0
    seq: int | None = None
    ts: int = 0
    cts: int | None = None

    def apply(self, frame: dict[str, Any]) -> None:
        data = frame["data"]
        if frame.get("type") == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data.get("b", [])), (self.asks, data.get("a", []))):
            for price, size in levels:
                if float(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self.u = int(data["u"])
        self.seq = data.get("seq")
        self.ts = int(frame.get("ts", 0))
        self.cts = frame.get("cts")

    def snapshot(self, topic: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "s": self.symbol,
            "b": [[p, s] for p, s in sorted(self.bids.items(), key=lambda kv: float(kv[0]), reverse=True)],
            "a": [[p, s] for p, s in sorted(self.asks.items(), key=lambda kv: float(kv[0]))],
            "u": self.u,
        }
        if self.seq is not None:
            data["seq"] = self.seq
        frame: dict[str, Any] = {"topic": topic, "type": "snapshot", "ts": self.ts, "data": data}
        if self.cts is not None:
            frame["cts"] = self.cts
        return frame


class BybitTestServer:
    """A real websocket server on 127.0.0.1 speaking Bybit v5 public; use as an async context manager.

    Args:
        frames: Frames (dicts) or :class:`FeedEntry` to replay, in order. More can be added later.
        host: Interface to bind.
        port: Port; 0 picks a free one (see :attr:`url`).
        pace_s: Fixed delay between replayed frames.
        speed: Replay at this multiple of the recorded ``ts_init`` spacing (``None``: as fast as possible).
        category: Path segment of :attr:`url` (``/v5/public/{category}``).
    """

    def __init__(
        self,
        frames: Iterable[FeedEntry | dict[str, Any]] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pace_s: float = 0.0,
        speed: float | None = None,
        category: str = "linear",
    ) -> None:
        self.host = host
        self.port = port
        self.pace_s = pace_s
        self.speed = speed
        self.category = category
        self._feed: list[FeedEntry] = []
        self._cursor = 0
        self._conns: set[_Connection] = set()
        self._books: dict[str, _Book] = {}
        self._tickers: dict[str, dict[str, Any]] = {}
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced on every state change; waiters re-check
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._playing = asyncio.Event()
        self._playing.set()
        self._stall_timer: asyncio.TimerHandle | None = None
        self._skip_topics: list[str | None] = []
        # Observations for tests.
        self.connections_total = 0
        self.pings = 0
        self.frames_sent = 0
        self.frames_skipped = 0
        self.deltas_swallowed = 0
        self.client_messages: list[dict[str, Any]] = []
        self.subscribe_requests: list[list[str]] = []
        self.feed_done = asyncio.Event()
        self.add_frames(frames)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v5/public/{self.category}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ping_interval=None,  # Bybit relies on the client's JSON ping, not protocol pings
            compression=None,
            max_size=2**20,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._pump_task = asyncio.create_task(self._pump(), name="bybit-testserver-pump")

    async def stop(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._unstalled.set()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> BybitTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- feed ------------------------------------------------------------------------------------

    def add_frames(self, frames: Iterable[FeedEntry | dict[str, Any]]) -> None:
        """Append frames to the replay."""
        added = [f if isinstance(f, FeedEntry) else FeedEntry(f) for f in frames]
        if added:
            self._feed.extend(added)
            self.feed_done.clear()
            self._notify()

    @property
    def subscribed_topics(self) -> set[str]:
        return set().union(*(c.topics for c in self._conns)) if self._conns else set()

    @property
    def connections(self) -> int:
        return len(self._conns)

    def book_top(self, topic: str) -> tuple[float | None, float | None]:
        """Best bid and ask of the server's own book for ``topic`` (what a synced client should see)."""
        book = self._books[topic]
        return (
            max(map(float, book.bids)) if book.bids else None,
            min(map(float, book.asks)) if book.asks else None,
        )

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked on every server state change (bound it with
        ``asyncio.timeout``)."""
        while not predicate():
            await self._changed.wait()

    # --- commands --------------------------------------------------------------------------------

    async def drop(self) -> None:
        """Abort every connection at once, with no closing handshake."""
        dropped, self._conns = self._conns, set()  # gone now, not when the handlers notice
        for conn in dropped:
            conn.ws.transport.abort()
        self._notify()

    def stall(self, seconds: float | None = None) -> None:
        """Stop sending anything, pongs included, for ``seconds`` or until :meth:`resume`."""
        self._unstalled.clear()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if seconds is not None:
            self._stall_timer = asyncio.get_running_loop().call_later(seconds, self.resume)

    def resume(self) -> None:
        self._unstalled.set()

    async def send_malformed(self, text: str = MALFORMED_FRAME) -> None:
        """Send a frame of malformed JSON to every connection."""
        for conn in list(self._conns):
            await self._send_text(conn, text)

    def skip_sequence(self, topic: str | None = None) -> None:
        """Swallow the next order book delta (of ``topic``, or of any book): clients see a ``u`` gap."""
        self._skip_topics.append(topic)

    def pause(self) -> None:
        self._playing.clear()

    def play(self) -> None:
        self._playing.set()

    async def control(self, command: str, *args: str) -> None:
        """Run a command by name, as the ``{"op": "control"}`` message does."""
        match command:
            case "drop":
                await self.drop()
            case "stall":
                self.stall(float(args[0]) if args else None)
            case "resume":
                self.resume()
            case "malformed":
                await self.send_malformed()
            case "skip_seq":
                self.skip_sequence(args[0] if args else None)
            case "pause":
                self.pause()
            case "play":
                self.play()
            case _:
                raise ValueError(f"unknown control command {command!r}")

    # --- protocol --------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Connection(ws, str(uuid.uuid4()))
        self._conns.add(conn)
        self.connections_total += 1
        self._notify()
        try:
            async for message in ws:
                await self._on_client_message(conn, message)
        except ConnectionClosed:
            pass  # the client went away; its subscriptions go with it
        finally:
            self._conns.discard(conn)
            self._notify()

    async def _on_client_message(self, conn: _Connection, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            await self._reply(conn, {"success": False, "ret_msg": "error:request not json object", "op": ""})
            return
        self.client_messages.append(request)
        op = request.get("op")
        req_id = request.get("req_id", "")
        args = request.get("args", [])
        match op:
            case "ping":
                self.pings += 1
                await self._reply(conn, {"success": True, "ret_msg": "pong", "req_id": req_id, "op": "ping"})
            case "subscribe":
                await self._subscribe(conn, args, req_id)
            case "unsubscribe":
                for topic in args if isinstance(args, list) else []:
                    conn.topics.discard(topic)
                    conn.book_ready.discard(topic)
                self._notify()
                await self._reply(conn, {"success": True, "ret_msg": "", "req_id": req_id, "op": "unsubscribe"})
            case "control":
                command, *params = [str(a) for a in args] if isinstance(args, list) and args else [""]
                if command not in CONTROL_COMMANDS:
                    msg = f"error:unknown control command {command!r}"
                    await self._reply(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": op})
                    return
                # Acknowledge first: after "drop" there is no connection left to answer on.
                await self._reply(conn, {"success": True, "ret_msg": "control", "req_id": req_id, "op": op})
                await self.control(command, *params)
            case _:
                await self._reply(
                    conn,
                    {"success": False, "ret_msg": f"error:unsupported op {op}", "req_id": req_id, "op": op},
                )

    async def _subscribe(self, conn: _Connection, args: object, req_id: object) -> None:
        topics = args if isinstance(args, list) else []
        for topic in topics:
            if not isinstance(topic, str) or not any(p.match(topic) for p in _TOPIC_PATTERNS):
                msg = f"error:handler not found,topic:{topic}"
                await self._reply(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": "subscribe"})
                return
            if topic in conn.topics:
                msg = f"error:already subscribed,topic:{topic}"
                await self._reply(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": "subscribe"})
                return
        conn.topics.update(topics)
        self.subscribe_requests.append(list(topics))
        await self._reply(conn, {"success": True, "ret_msg": "subscribe", "req_id": req_id, "op": "subscribe"})
        for topic in topics:
            # Bybit pushes the current book and ticker right after a subscription.
            book = self._books.get(topic)
            if book is not None:
                await self._send_frame(conn, book.snapshot(topic))
                conn.book_ready.add(topic)
            ticker = self._tickers.get(topic)
            if ticker is not None:
                await self._send_frame(conn, ticker)
        self._notify()

    async def _reply(self, conn: _Connection, body: dict[str, Any]) -> None:
        # Field order as Bybit sends it: success, ret_msg, conn_id, req_id, op.
        ordered = {"success": body["success"], "ret_msg": body["ret_msg"], "conn_id": conn.conn_id}
        ordered["req_id"] = body.get("req_id", "")
        ordered["op"] = body["op"]
        await self._send_text(conn, orjson.dumps(ordered).decode())

    async def _send_frame(self, conn: _Connection, frame: dict[str, Any]) -> None:
        await self._send_text(conn, orjson.dumps(frame).decode())
        self.frames_sent += 1

    async def _send_text(self, conn: _Connection, text: str) -> None:
        await self._unstalled.wait()
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            self._conns.discard(conn)

    # --- replay ----------------------------------------------------------------------------------

    async def _pump(self) -> None:
        previous_ts: int | None = None
        while True:
            await self.wait_until(lambda: self._cursor < len(self._feed) and any(c.topics for c in self._conns))
            await self._playing.wait()
            await self._unstalled.wait()
            entry = self._feed[self._cursor]
            if self.speed is not None and entry.ts_init is not None and previous_ts is not None:
                await asyncio.sleep(max(0.0, (entry.ts_init - previous_ts) / 1000.0 / self.speed))
            elif self.pace_s:
                await asyncio.sleep(self.pace_s)
            previous_ts = entry.ts_init if entry.ts_init is not None else previous_ts
            await self._dispatch(entry.frame)
            self._cursor += 1
            if self._cursor >= len(self._feed):
                self.feed_done.set()
            self._notify()

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        topic = frame.get("topic")
        if not isinstance(topic, str):
            self.frames_skipped += 1
            return
        receivers = [c for c in self._conns if topic in c.topics]
        if topic.startswith("orderbook."):
            book = self._books.get(topic)
            if book is None:
                book = self._books[topic] = _Book(frame["data"]["s"])
            book.apply(frame)
            if frame.get("type") == "snapshot":
                for conn in receivers:
                    conn.book_ready.add(topic)
            else:
                receivers = [c for c in receivers if topic in c.book_ready]
                if self._swallow(topic):
                    self.deltas_swallowed += 1
                    return
        elif topic.startswith("tickers."):
            merged = dict(self._tickers.get(topic, {}).get("data", {}))
            merged.update(frame["data"])
            self._tickers[topic] = {**frame, "type": "snapshot", "data": merged}
        if not receivers:
            self.frames_skipped += 1
            return
        for conn in receivers:
            await self._send_frame(conn, frame)

    def _swallow(self, topic: str) -> bool:
        for i, wanted in enumerate(self._skip_topics):
            if wanted is None or wanted == topic:
                del self._skip_topics[i]
                return True
        return False

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


# --- loaders ---------------------------------------------------------------------------------------


def load_recording(path: Path) -> list[FeedEntry]:
    """Bybit frames of a JSONL recording (``.gz`` too); lines of other sources are skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    entries: list[FeedEntry] = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{number}: malformed JSON: {exc}", line=number) from None
            if not isinstance(record, dict) or record.get("source") != "bybit":
                continue
            frame = record.get("data")
            if not isinstance(frame, dict):
                raise InvalidInput(f"{path}:{number}: bybit line without a frame object", line=number)
            ts_init = record.get("ts_init")
            entries.append(FeedEntry(frame, ts_init if isinstance(ts_init, int) else None))
    return entries


_CSV_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)_(?P<interval>1m|5m|15m|1h|1d)$")


def load_kline_csv(
    path: Path, symbol: str | None = None, interval: Interval | None = None, limit: int | None = None
) -> list[FeedEntry]:
    """Kline CSV rows as confirmed kline frames; symbol and interval default from ``SYMBOL_1m.csv``."""
    match = _CSV_NAME.match(path.stem)
    if symbol is None or interval is None:
        if match is None:
            raise InvalidInput(f"{path.name}: pass --symbol and --interval (name is not SYMBOL_INTERVAL.csv)")
        symbol = symbol or match["symbol"]
        interval = interval or Interval(match["interval"])
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit is not None:
        rows = rows[:limit]
    return [FeedEntry(frame, frame["ts"]) for frame in klines_to_frames(rows, symbol, interval)]


# --- command line ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.bybit.testserver",
        description=(
            "Local Bybit v5 public websocket server. Replays a recording or a kline CSV to subscribed "
            "clients; answers subscribe/ping like Bybit. Clients can inject faults with "
            '{"op":"control","args":["drop"|"stall" [s]|"resume"|"malformed"|"skip_seq" [topic]|'
            '"pause"|"play"]}.'
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recording", type=Path, help="JSONL(.gz) recording; its bybit frames are replayed")
    source.add_argument("--klines", type=Path, help="kline CSV (timestamp,open,high,low,close,volume)")
    parser.add_argument("--symbol", help="symbol of --klines (default: from SYMBOL_1m.csv)")
    parser.add_argument("--interval", choices=[i.value for i in Interval], help="interval of --klines")
    parser.add_argument("--limit", type=int, help="replay only the first N kline rows")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument("--speed", type=float, help="replay at N x recorded time (default: as fast as possible)")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="fixed delay between frames, ms")
    return parser


async def _serve_forever(entries: Sequence[FeedEntry], args: argparse.Namespace) -> None:
    async with BybitTestServer(
        entries, host=args.host, port=args.port, pace_s=args.pace_ms / 1000.0, speed=args.speed
    ) as server:
        print(f"bybit test server listening on {server.url} ({len(entries)} frames)", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.recording is not None:
            entries = load_recording(args.recording)
        else:
            interval = Interval(args.interval) if args.interval else None
            entries = load_kline_csv(args.klines, args.symbol, interval, args.limit)
    except (InvalidInput, OSError) as exc:
        print(f"error: {exc}")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(entries, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
