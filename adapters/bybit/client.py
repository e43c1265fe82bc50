"""Raw Bybit v5 public websocket protocol: connect, subscribe, ping, reconnect, resubscribe.

The client knows nothing about events: it hands every text message, with its receive time, to a
callback. Heartbeats are Bybit's application-level ``{"op":"ping"}`` every ``ping_interval_s``; a ping
left unanswered for ``pong_timeout_s`` (a stalled server) drops the connection, and every drop is
followed by a reconnect with exponential backoff and full jitter, then a resubscribe of every topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from adapters.bybit.config import BybitSettings
from engine.errors import FatalError, TransientError
from engine.ports import Clock
from engine.retry import Backoff

log = logging.getLogger(__name__)

MessageHandler = Callable[[str | bytes, int], Awaitable[None]]

# Bybit accepts at most 10 args per subscribe request on some categories (spot); batch to be safe.
_MAX_ARGS_PER_REQUEST = 10


@dataclass
class ClientStats:
    """Counters a caller or a test can read."""

    connects: int = 0  # connections opened; the number of the current one (the source flags each new one)
    reconnects: int = 0
    pings_sent: int = 0
    pongs: int = 0
    pong_timeouts: int = 0
    messages: int = 0
    data_messages: int = 0  # messages that are not op replies (acks, pongs)
    errors: list[str] = field(default_factory=list)


class BybitWsClient:
    """One public websocket connection (re-established as needed) and its subscriptions.

    Methods are named after Bybit's operations: :meth:`subscribe`, :meth:`unsubscribe`, :meth:`ping`.
    :meth:`run` owns the connection until :meth:`close` or until ``max_reconnects`` is exhausted.
    """

    def __init__(self, settings: BybitSettings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock  # the composition passes the wall clock; tests may pass their own
        self.stats = ClientStats()
        self._topics: dict[str, None] = {}  # insertion-ordered set
        self._ws: ClientConnection | None = None
        self._closed = asyncio.Event()
        self._pong = asyncio.Event()
        self._req_ids = itertools.count(1)
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_factor)

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    async def subscribe(self, args: Iterable[str]) -> None:
        """Subscribe to topics now if connected; they are (re)subscribed on every (re)connect."""
        new = [topic for topic in args if topic not in self._topics]
        self._topics.update(dict.fromkeys(new))
        if new and self._ws is not None:
            await self._send_op("subscribe", new)

    async def resubscribe(self, topic: str) -> None:
        """Unsubscribe then subscribe one topic: Bybit answers with a fresh snapshot.

        The topic stays in the subscription set throughout, so when a send fails (the link is often
        failing when a book has a gap) the reconnect still subscribes it.
        """
        self._topics.setdefault(topic, None)
        if self._ws is not None:
            await self._send_op("unsubscribe", [topic])
            await self._send_op("subscribe", [topic])

    async def ping(self) -> None:
        await self._send({"req_id": str(next(self._req_ids)), "op": "ping"})
        self.stats.pings_sent += 1

    async def send_raw(self, payload: dict[str, object]) -> None:
        """Send any JSON object (the test server's control messages use this)."""
        await self._send(payload)

    async def close(self) -> None:
        self._closed.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def run(self, on_message: MessageHandler) -> None:
        """Connect, subscribe and deliver messages until :meth:`close`; reconnect on any drop.

        Raises:
            TransientError: ``max_reconnects`` reconnects failed in a row.
            FatalError: The URL is invalid.
        """
        failures = 0
        while not self._closed.is_set():
            data_before = self.stats.data_messages
            try:
                await self._session(on_message)
            except InvalidURI as exc:
                raise FatalError(f"invalid Bybit websocket URL {self.settings.ws_url!r}: {exc}") from exc
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, TransientError) as exc:
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("bybit websocket dropped: %s", exc)
            if self.stats.data_messages > data_before:
                # The connection delivered market data, so it worked: back off from scratch. A server that
                # only acks the subscribe and then closes keeps backing off (Bybit limits connects/5 min).
                failures = 0
            if self._closed.is_set():
                return
            limit = self.settings.max_reconnects
            if limit is not None and failures >= limit:
                raise TransientError(f"bybit websocket: gave up after {failures} failed reconnects")
            attempts = self.settings.max_connect_attempts
            if self.stats.connects == 0 and attempts is not None and failures + 1 >= attempts:
                last = self.stats.errors[-1] if self.stats.errors else "no error recorded"
                raise TransientError(f"bybit websocket: gave up after {failures + 1} connection attempts to "
                                     f"{self.settings.ws_url}, none succeeded (last: {last})")
            delay = self._backoff.delay(failures)
            failures += 1
            self.stats.reconnects += 1
            log.info("bybit websocket reconnecting in %.2fs (attempt %d)", delay, failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    async def _session(self, on_message: MessageHandler) -> None:
        async with connect(
            self.settings.ws_url,
            open_timeout=self.settings.open_timeout_s,
            ping_interval=None,  # Bybit wants its own JSON ping, sent by _heartbeat
            close_timeout=1.0,
            max_size=2**24,
        ) as ws:
            self._ws = ws
            self.stats.connects += 1
            heartbeat = asyncio.create_task(self._heartbeat(ws))
            try:
                if self._topics:
                    await self._send_op("subscribe", list(self._topics))
                if self.stats.connects > 1:
                    log.info("bybit websocket connected again (connection %d), %d topics resubscribed",
                             self.stats.connects, len(self._topics))
                async for message in ws:
                    ts_init = self.clock.now_ms()
                    self.stats.messages += 1
                    if not self._observe_control(message):
                        self.stats.data_messages += 1
                    await on_message(message, ts_init)
            finally:
                self._ws = None
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            self._pong.clear()
            try:
                await self.ping()
            except TransientError:
                return  # the connection is going away; the session loop notices and reconnects
            try:
                await asyncio.wait_for(self._pong.wait(), self.settings.pong_timeout_s)
            except TimeoutError:
                self.stats.pong_timeouts += 1
                log.warning("bybit websocket: no pong within %.1fs; dropping", self.settings.pong_timeout_s)
                # Abort rather than close: a stalled peer would not finish a closing handshake.
                ws.transport.abort()
                return

    def _observe_control(self, message: str | bytes) -> bool:
        """Note pongs; True when ``message`` is an op reply (subscribe ack, pong) rather than data."""
        # Cheap pre-check: data frames carry "topic", never "op".
        if (b'"op"' not in message) if isinstance(message, bytes) else ('"op"' not in message):
            return False
        try:
            frame = orjson.loads(message)
        except orjson.JSONDecodeError:
            return False  # the source dead-letters it
        if not isinstance(frame, dict) or "op" not in frame:
            return False
        # Linear/inverse answer {"op":"ping","ret_msg":"pong"}; spot answers {"op":"pong"}.
        if frame.get("op") == "pong" or (frame.get("op") == "ping" and frame.get("ret_msg") == "pong"):
            self.stats.pongs += 1
            self._pong.set()
        return True

    async def _send_op(self, op: str, args: list[str]) -> None:
        for i in range(0, len(args), _MAX_ARGS_PER_REQUEST):
            await self._send(
                {"req_id": str(next(self._req_ids)), "op": op, "args": args[i : i + _MAX_ARGS_PER_REQUEST]}
            )

    async def _send(self, payload: dict[str, object]) -> None:
        ws = self._ws
        if ws is None:
            raise TransientError("bybit websocket is not connected")
        try:
            await ws.send(orjson.dumps(payload).decode())
        except ConnectionClosed as exc:
            raise TransientError(f"bybit websocket closed while sending {payload.get('op')}: {exc}") from exc
