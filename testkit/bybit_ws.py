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

Control messages are the test's side channel, not Bybit's: they are read and acknowledged even during
a stall (the stall holds back everything else, pongs and frames included, until it ends).

Delivery: the replay waits while no client is subscribed to anything, and each frame goes exactly once
to every connection subscribed to its topic; a frame that reached none of its subscribers because
they dropped is sent to the next one that subscribes, so a reconnecting client loses nothing (a book
or ticker frame is covered by the snapshot a new subscriber gets, so it is not sent twice). Frames
for topics that no connected client subscribed to are skipped, as Bybit would.

With ``realtime_loss=True`` it keeps venue time instead, as Bybit does: the replay starts when the first
client subscribes and from then on every frame is published when it is due, listened to or not. A frame
due while no connection is subscribed to its topic is gone, and so is one queued to a connection that
drops before it is written (both counted in ``frames_lost``). A stall holds the connections' queues, not
the replay: what falls due meanwhile waits there, and is lost if that connection drops. Only ``pause``
stops the clock. A client then has to heal the gap itself (``sigstream run`` backfills it over REST).

From the command line: ``sigstream testserver bybit --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from adapters.bybit.frames import kline_frame
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


# One queued message: its text, and a future told whether it reached the socket (None: nobody asks).
_Outgoing = tuple[str, "asyncio.Future[bool] | None"]


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    conn_id: str
    topics: set[str] = field(default_factory=set)
    book_ready: set[str] = field(default_factory=set)  # books this client has had a snapshot of
    # topic -> index of the last replayed frame the subscribe-time snapshot of that topic reflects.
    covered: dict[str, int] = field(default_factory=dict)
    # Everything for this client goes through one queue and one writer, in order; a stall holds the
    # writer, never the reader, so control messages are still read while replies wait.
    outbox: asyncio.Queue[_Outgoing] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None


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
        realtime_loss: Venue semantics (see the module docstring): frames due while nobody listens are lost.
        on_publish: Called with ``(index, frame)`` as each frame falls due, just before it is sent (a test
            keeps a REST server in step with it: a bar is on REST once its kline has been published).
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
        realtime_loss: bool = False,
        on_publish: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.pace_s = pace_s
        self.speed = speed
        self.category = category
        self.realtime_loss = realtime_loss
        self.on_publish = on_publish
        self._feed: list[FeedEntry] = []
        self._cursor = 0
        self._applied = -1  # index of the last frame whose effect on books/tickers is applied
        self._swallowed = False  # the frame at _applied is a swallowed delta
        self._conns: set[_Connection] = set()
        self._books: dict[str, _Book] = {}
        self._tickers: dict[str, dict[str, Any]] = {}
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced on every state change; waiters re-check
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._stalled = asyncio.Event()
        self._playing = asyncio.Event()
        self._playing.set()
        self._stall_timer: asyncio.TimerHandle | None = None
        self._skip_topics: list[str | None] = []
        # Observations for tests.
        self.connections_total = 0
        self.pings = 0
        self.frames_sent = 0
        self.frames_skipped = 0
        self.frames_lost = 0  # realtime_loss: frames that reached no client (nobody subscribed, or dropped)
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
            close_timeout=1.0,  # stopping waits at most this long for a client that reads nothing
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._pump_task = asyncio.create_task(self._pump(), name="bybit-testserver-pump")

    async def stop(self) -> None:
        self.resume()
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
    def frames_published(self) -> int:
        """Frames the replay has got to so far (sent, skipped or lost)."""
        return self._cursor

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
        self._stalled.set()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if seconds is not None:
            self._stall_timer = asyncio.get_running_loop().call_later(seconds, self.resume)
        self._notify()

    def resume(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._stalled.clear()
        self._unstalled.set()
        self._notify()

    async def send_malformed(self, text: str = MALFORMED_FRAME) -> None:
        """Send a frame of malformed JSON to every connection (during a stall: when it ends)."""
        await asyncio.gather(*self._broadcast(text))

    def skip_sequence(self, topic: str | None = None) -> None:
        """Swallow the next order book delta (of ``topic``, or of any book): clients see a ``u`` gap."""
        self._skip_topics.append(topic)

    def pause(self) -> None:
        self._playing.clear()
        self._notify()

    def play(self) -> None:
        self._playing.set()
        self._notify()

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
        conn.writer = asyncio.create_task(self._write(conn), name=f"bybit-testserver-writer-{conn.conn_id[:8]}")
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
            conn.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.writer
            while not conn.outbox.empty():  # nothing queued for it will be sent now
                _, done = conn.outbox.get_nowait()
                if done is not None and not done.done():
                    done.set_result(False)
            self._notify()

    async def _on_client_message(self, conn: _Connection, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._reply(conn, {"success": False, "ret_msg": "error:request not json object", "op": ""})
            return
        self.client_messages.append(request)
        op = request.get("op")
        req_id = request.get("req_id", "")
        args = request.get("args", [])
        match op:
            case "ping":
                self.pings += 1
                self._reply(conn, {"success": True, "ret_msg": "pong", "req_id": req_id, "op": "ping"})
            case "subscribe":
                self._subscribe(conn, args, req_id)
            case "unsubscribe":
                for topic in args if isinstance(args, list) else []:
                    conn.topics.discard(topic)
                    conn.book_ready.discard(topic)
                    conn.covered.pop(topic, None)
                self._notify()
                self._reply(conn, {"success": True, "ret_msg": "", "req_id": req_id, "op": "unsubscribe"})
            case "control":
                await self._on_control(conn, args, req_id)
            case _:
                self._reply(
                    conn,
                    {"success": False, "ret_msg": f"error:unsupported op {op}", "req_id": req_id, "op": op},
                )

    async def _on_control(self, conn: _Connection, args: object, req_id: object) -> None:
        command, *params = [str(a) for a in args] if isinstance(args, list) and args else [""]
        if command not in CONTROL_COMMANDS:
            msg = f"error:unknown control command {command!r}"
            await self._answer_control(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": "control"})
            return
        ack = {"success": True, "ret_msg": "control", "req_id": req_id, "op": "control"}
        if command == "resume":
            self.resume()  # first: its answer must not wait on the stall it ends
            await self._answer_control(conn, ack)
            return
        # Answer first: after "drop" there is no connection left to answer on, after "stall" no sending.
        await self._answer_control(conn, ack)
        if command == "malformed":
            self._broadcast(MALFORMED_FRAME)  # held by a stall like any frame; the reader does not wait
        else:
            await self.control(command, *params)

    async def _answer_control(self, conn: _Connection, body: dict[str, Any]) -> None:
        """Answer a control message: in turn with what is queued before it, or at once during a stall."""
        text = self._reply_text(conn, body)
        if self._unstalled.is_set():
            done = self._queue_text(conn, text)
            stalled = asyncio.ensure_future(self._stalled.wait())
            try:
                await asyncio.wait((done, stalled), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stalled.cancel()
            if done.done():
                return
            done.cancel()  # a stall began while it waited in the queue: the writer skips it
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(text)

    def _subscribe(self, conn: _Connection, args: object, req_id: object) -> None:
        topics = args if isinstance(args, list) else []
        for topic in topics:
            if not isinstance(topic, str) or not any(p.match(topic) for p in _TOPIC_PATTERNS):
                msg = f"error:handler not found,topic:{topic}"
                self._reply(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": "subscribe"})
                return
            if topic in conn.topics:
                msg = f"error:already subscribed,topic:{topic}"
                self._reply(conn, {"success": False, "ret_msg": msg, "req_id": req_id, "op": "subscribe"})
                return
        conn.topics.update(topics)
        self.subscribe_requests.append(list(topics))
        self._reply(conn, {"success": True, "ret_msg": "subscribe", "req_id": req_id, "op": "subscribe"})
        for topic in topics:
            # Bybit pushes the current book and ticker right after a subscription. They reflect every
            # frame applied so far, so none of those is sent to this client again.
            book = self._books.get(topic)
            if book is not None:
                self._queue_frame(conn, book.snapshot(topic))
                conn.book_ready.add(topic)
                conn.covered[topic] = self._applied
            ticker = self._tickers.get(topic)
            if ticker is not None:
                self._queue_frame(conn, ticker)
                conn.covered[topic] = self._applied
        self._notify()

    @staticmethod
    def _reply_text(conn: _Connection, body: dict[str, Any]) -> str:
        # Field order as Bybit sends it: success, ret_msg, conn_id, req_id, op.
        ordered = {"success": body["success"], "ret_msg": body["ret_msg"], "conn_id": conn.conn_id}
        ordered["req_id"] = body.get("req_id", "")
        ordered["op"] = body["op"]
        return orjson.dumps(ordered).decode()

    def _reply(self, conn: _Connection, body: dict[str, Any]) -> None:
        conn.outbox.put_nowait((self._reply_text(conn, body), None))

    def _queue_text(self, conn: _Connection, text: str) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        conn.outbox.put_nowait((text, done))
        return done

    def _queue_frame(self, conn: _Connection, frame: dict[str, Any]) -> asyncio.Future[bool]:
        done = self._queue_text(conn, orjson.dumps(frame).decode())
        done.add_done_callback(self._count_sent)
        return done

    def _count_sent(self, done: asyncio.Future[bool]) -> None:
        if not done.cancelled() and done.result():
            self.frames_sent += 1

    def _broadcast(self, text: str) -> list[asyncio.Future[bool]]:
        return [self._queue_text(conn, text) for conn in list(self._conns)]

    async def _write(self, conn: _Connection) -> None:
        """The one writer of a connection: sends its queue in order, holding everything during a stall."""
        while True:
            text, done = await conn.outbox.get()
            sent = False
            try:
                await self._unstalled.wait()
                if done is not None and done.cancelled():
                    continue  # answered some other way meanwhile
                if conn in self._conns:
                    try:
                        await conn.ws.send(text)
                    except ConnectionClosed:
                        self._conns.discard(conn)
                        self._notify()
                    # Dropped while sending: the bytes were thrown away with the connection.
                    sent = conn in self._conns
            finally:  # also when the connection ends while this waits: whoever waits on it hears "no"
                if done is not None and not done.done():
                    done.set_result(sent)

    # --- replay ----------------------------------------------------------------------------------

    def _can_send(self) -> bool:
        return self._playing.is_set() and self._unstalled.is_set() and any(c.topics for c in self._conns)

    async def _ready(self) -> None:
        """Wait until the replay may send: playing, not stalled, and someone subscribed (all at once)."""
        while not self._can_send():
            await self.wait_until(lambda: any(c.topics for c in self._conns))
            await self._playing.wait()
            await self._unstalled.wait()

    async def _pump(self) -> None:
        previous_ts: int | None = None
        if self.realtime_loss:
            await self._ready()  # venue time starts with the first subscriber
        while True:
            await self.wait_until(lambda: self._cursor < len(self._feed))
            if self.realtime_loss:
                await self._playing.wait()
            else:
                await self._ready()
            entry = self._feed[self._cursor]
            if self.speed is not None and entry.ts_init is not None and previous_ts is not None:
                await asyncio.sleep(max(0.0, (entry.ts_init - previous_ts) / 1000.0 / self.speed))
            elif self.pace_s:
                await asyncio.sleep(self.pace_s)
            previous_ts = entry.ts_init if entry.ts_init is not None else previous_ts
            if self.realtime_loss:
                await self._playing.wait()  # paused during the delay: the frame is due when play resumes
                if self.on_publish is not None:
                    self.on_publish(self._cursor, entry.frame)
                self._publish(self._cursor, entry.frame)
            else:
                # Check again right before sending: a client that dropped during the pause must not make the
                # frame count as skipped. A frame that reached none of its subscribers is sent again.
                await self._ready()
                if self.on_publish is not None:
                    self.on_publish(self._cursor, entry.frame)
                while not await self._dispatch(self._cursor, entry.frame):
                    await self._ready()
            self._cursor += 1
            if self._cursor >= len(self._feed):
                self.feed_done.set()
            self._notify()

    def _publish(self, index: int, frame: dict[str, Any]) -> None:
        """``realtime_loss``: queue frame ``index`` to whoever is subscribed now, without waiting for it to be
        written; it is lost when nobody is, or when every receiver drops before it is written."""
        receivers = self._receivers(index, frame)
        if receivers is None:
            return
        if not receivers:
            self.frames_lost += 1
            return
        waiting = len(receivers)
        sent = False

        def written(done: asyncio.Future[bool]) -> None:
            nonlocal waiting, sent
            waiting -= 1
            sent = sent or (not done.cancelled() and done.result())
            if waiting == 0 and not sent:
                self.frames_lost += 1
                self._notify()

        for conn in receivers:
            self._queue_frame(conn, frame).add_done_callback(written)

    async def _dispatch(self, index: int, frame: dict[str, Any]) -> bool:
        """Send frame ``index`` to its subscribers; False when every one of them dropped before it arrived."""
        receivers = self._receivers(index, frame)
        if receivers is None:
            return True
        if not receivers:
            topic = frame["topic"]
            subscribed = [c for c in self._conns if topic in c.topics]
            if not any(c.covered.get(topic, -1) >= index for c in subscribed):
                self.frames_skipped += 1  # (a frame a subscriber's snapshot already reflects is not skipped)
            return True
        delivered = await asyncio.gather(*(self._queue_frame(conn, frame) for conn in receivers))
        return any(delivered)

    def _receivers(self, index: int, frame: dict[str, Any]) -> list[_Connection] | None:
        """Apply frame ``index`` (once) and pick the connections it goes to; None when it goes to nobody by
        design (no topic: counted as skipped; a swallowed delta)."""
        topic = frame.get("topic")
        if not isinstance(topic, str):
            self.frames_skipped += 1
            return None
        if index > self._applied:  # books and tickers change once per frame, however often it is sent
            self._applied = index
            self._swallowed = self._apply(topic, frame)
            if self._swallowed:
                self.deltas_swallowed += 1
        if self._swallowed:
            return None
        subscribed = [c for c in self._conns if topic in c.topics]
        receivers = [c for c in subscribed if c.covered.get(topic, -1) < index]
        if topic.startswith("orderbook."):
            if frame.get("type") == "snapshot":
                for conn in receivers:
                    conn.book_ready.add(topic)
            else:
                receivers = [c for c in receivers if topic in c.book_ready]
        return receivers

    def _apply(self, topic: str, frame: dict[str, Any]) -> bool:
        """Update the server's books and tickers with ``frame``; True when it is a delta to swallow."""
        if topic.startswith("orderbook."):
            book = self._books.get(topic)
            if book is None:
                book = self._books[topic] = _Book(frame["data"]["s"])
            book.apply(frame)
            return frame.get("type") != "snapshot" and self._swallow(topic)
        if topic.startswith("tickers."):
            merged = dict(self._tickers.get(topic, {}).get("data", {}))
            merged.update(frame["data"])
            self._tickers[topic] = {**frame, "type": "snapshot", "data": merged}
        return False

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
    entries = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            frame = kline_frame(row, symbol, interval)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}:{number}: {exc.reason}", line=number) from None
        entries.append(FeedEntry(frame, frame["ts"]))
    return entries
