"""Redis feature cache: implements :class:`engine.ports.FeatureStore`.

Per symbol, under ``{prefix}``:

* ``{prefix}:features:{symbol}`` - hash of the latest features (one field per feature, plus
  ``event``: the versioned payload that :func:`engine.serialization.decode_event` restores);
* ``{prefix}:barset:{symbol}``   - sorted set of the most recent bars scored by bar start, trimmed to
  ``max_bars``; a bar replaces any earlier copy with the same start, so a retried write (its reply lost)
  or a re-delivered bar never appears twice in a warm-up;
* ``{prefix}:symbols``           - set of the symbols written, so a cold worker knows what to warm.

Writes are buffered and sent in one pipeline for many symbols and bars: never one round trip per
tick. Every key gets the TTL again on each write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import TypeVar, cast

from adapters.redis.client import connect, transient_errors
from adapters.redis.config import RedisSettings
from engine.errors import InvalidInput, TransientError
from engine.events import FEATURE_NAMES, Bar, Features
from engine.ports import FeatureStore
from engine.retry import Backoff, retry_transient
from engine.serialization import decode_event, encode_event

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisFeatureStore:
    """Buffered, pipelined Redis writes and direct reads; raises :class:`TransientError` when Redis is down.

    Pending writes are coalesced per symbol (the latest features, the last ``max_bars`` bars), so a
    long outage costs bounded memory and nothing a warm-up needs is lost.
    """

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings or RedisSettings()
        self._redis = connect(self.settings)
        self._pending_features: dict[str, Features] = {}
        self._pending_bars: dict[str, deque[Bar]] = {}
        self._pending_count = 0
        self._flush_lock = asyncio.Lock()
        self.round_trips = 0

    # -- keys -------------------------------------------------------------------------------
    def features_key(self, symbol: str) -> str:
        return f"{self.settings.key_prefix}:features:{symbol}"

    def bars_key(self, symbol: str) -> str:
        # "barset", not the "bars" lists of earlier versions: a new key type under an old name would
        # answer WRONGTYPE until those lists expire.
        return f"{self.settings.key_prefix}:barset:{symbol}"

    @property
    def symbols_key(self) -> str:
        return f"{self.settings.key_prefix}:symbols"

    # -- writes -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Writes buffered and not yet acknowledged by Redis."""
        return self._pending_count

    def buffer(self, bar: Bar, features: Features) -> None:
        """Queue a write without any I/O."""
        bars = self._pending_bars.get(bar.symbol)
        if bars is None:
            bars = self._pending_bars[bar.symbol] = deque(maxlen=self.settings.max_bars)
        bars.append(bar)
        self._pending_features[features.symbol] = features
        self._pending_count += 1

    async def save(self, bar: Bar, features: Features) -> None:
        """Queue a write; sends the pipeline once ``flush_max_items`` writes are waiting."""
        self.buffer(bar, features)
        if self._pending_count >= self.settings.flush_max_items:
            await self.flush()

    async def flush(self) -> None:
        """Send every pending write in one pipeline; on failure they stay pending (TransientError)."""
        async with self._flush_lock:
            if not self._pending_count:
                return
            # Take the buffers before the await: saves that land while the pipeline is in flight go to
            # fresh buffers instead of being cleared with the ones just written.
            features, bars, count = self._pending_features, self._pending_bars, self._pending_count
            self._pending_features, self._pending_bars, self._pending_count = {}, {}, 0
            ttl = self.settings.ttl_s
            pipe = self._redis.pipeline(transaction=False)
            for symbol in sorted(set(features) | set(bars)):
                fkey, bkey = self.features_key(symbol), self.bars_key(symbol)
                latest = features.get(symbol)
                if latest is not None:
                    pipe.hset(fkey, mapping=_feature_fields(latest))  # type: ignore[arg-type]  # stubs reject str|bytes values redis accepts
                    pipe.expire(fkey, ttl)
                window = bars.get(symbol)
                if window:
                    for bar in window:
                        # Remove-then-add by start: idempotent, so resending after a lost reply is safe.
                        pipe.zremrangebyscore(bkey, bar.start, bar.start)
                        pipe.zadd(bkey, {encode_event(bar): bar.start})
                    pipe.zremrangebyrank(bkey, 0, -self.settings.max_bars - 1)
                    pipe.expire(bkey, ttl)
                pipe.sadd(self.symbols_key, symbol)
            pipe.expire(self.symbols_key, ttl)
            try:
                async with transient_errors("pipelined write"):
                    await pipe.execute()
            except BaseException:
                self._restore(features, bars, count)  # whatever failed (or cancelled the write), keep it pending
                raise
            self.round_trips += 1

    def _restore(self, features: dict[str, Features], bars: dict[str, deque[Bar]], count: int) -> None:
        """Put unacknowledged writes back in front of anything buffered since."""
        for symbol, window in bars.items():
            newer = self._pending_bars.get(symbol, ())
            self._pending_bars[symbol] = deque([*window, *newer], maxlen=self.settings.max_bars)
        self._pending_features = features | self._pending_features
        self._pending_count += count

    # -- reads ------------------------------------------------------------------------------
    async def latest(self, symbol: str) -> Features | None:
        async with transient_errors("read of latest features"):
            payload = await self._redis.hget(self.features_key(symbol), "event")
        return None if payload is None else _decode(payload, Features)

    async def recent_bars(self, symbol: str, limit: int) -> list[Bar]:
        if limit <= 0:
            return []
        async with transient_errors("read of recent bars"):
            payloads = await self._redis.zrange(self.bars_key(symbol), -limit, -1)
        return [_decode(cast(bytes, p), Bar) for p in payloads]  # members only: withscores is off

    async def symbols(self) -> list[str]:
        async with transient_errors("read of symbols"):
            members = await self._redis.smembers(self.symbols_key)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def warm_up(
        self, symbols: Iterable[str] | None = None, limit: int | None = None
    ) -> dict[str, list[Bar]]:
        """Recent bars of many symbols in one round trip, so a cold worker can rebuild its features."""
        names = list(symbols) if symbols is not None else await self.symbols()
        limit = limit or self.settings.warm_bars
        if not names:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for symbol in names:
            pipe.zrange(self.bars_key(symbol), -limit, -1)
        async with transient_errors("warm-up read"):
            results = await pipe.execute()
        return {
            s: [_decode(p, Bar) for p in payloads]
            for s, payloads in zip(names, results, strict=True)
            if payloads
        }

    async def ping(self) -> None:
        async with transient_errors("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _feature_fields(features: Features) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        name: "" if (v := getattr(features, name)) is None else repr(v) for name in FEATURE_NAMES
    }
    fields["start"] = str(features.start)
    fields["close"] = repr(features.close)
    fields["event"] = encode_event(features)
    return fields


def _decode(payload: bytes | str, kind: type[T]) -> T:
    event = decode_event(payload)
    if not isinstance(event, kind):
        found = type(event).__name__
        raise InvalidInput(f"redis holds a {found} where a {kind.__name__} belongs", raw=payload)
    return event


class ResilientFeatureStore:
    """A FeatureStore that never stops the engine: in-process state first, Redis behind it.

    Every save lands in ``local`` at once. Redis writes are flushed in the background every
    ``flush_interval_ms`` (or when ``flush_max_items`` are pending). While Redis is down, writes stay
    coalesced in the Redis store's buffer, reads are answered from ``local``, and a reconnect loop
    retries with :func:`engine.retry.retry_transient` backoff until Redis answers and the backlog
    is written.
    """

    def __init__(self, redis_store: RedisFeatureStore, local: FeatureStore) -> None:
        self.redis = redis_store
        self.local = local  # the embedded in-memory store, given by the composition
        self.healthy = True
        self.outages = 0
        self._flusher: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def save(self, bar: Bar, features: Features) -> None:
        await self.local.save(bar, features)
        self.redis.buffer(bar, features)
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        if self.healthy and self.redis.pending >= self.redis.settings.flush_max_items:
            await self._try_flush()

    async def latest(self, symbol: str) -> Features | None:
        features = await self.local.latest(symbol)
        if features is not None or not self.healthy:
            return features
        try:
            return await self.redis.latest(symbol)
        except TransientError as exc:
            self._went_down(exc)
            return None

    async def recent_bars(self, symbol: str, limit: int) -> list[Bar]:
        bars = await self.local.recent_bars(symbol, limit)
        if bars or not self.healthy:
            return bars
        try:
            return await self.redis.recent_bars(symbol, limit)
        except TransientError as exc:
            self._went_down(exc)
            return []

    async def warm_up(self, symbols: Iterable[str] | None = None) -> dict[str, list[Bar]]:
        """Bars to restore state from; empty (and a reconnect started) when Redis is down."""
        try:
            return await self.redis.warm_up(symbols)
        except TransientError as exc:
            self._went_down(exc)
            return {}

    async def flush(self) -> None:
        """Write the backlog now if Redis is up (shutdown path); raises TransientError if it fails."""
        await self.redis.flush()

    async def close(self) -> None:
        self._closed = True
        for task in (self._flusher, self._reconnect):
            if task is not None:
                task.cancel()
        for task in (self._flusher, self._reconnect):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):  # we cancelled it just above
                    await task
        if self.healthy:
            try:
                await self.redis.flush()
            except TransientError as exc:
                log.warning("redis backlog of %d writes not saved at shutdown: %s", self.redis.pending, exc)
        await self.redis.close()

    async def _try_flush(self) -> None:
        try:
            await self.redis.flush()
        except TransientError as exc:
            self._went_down(exc)

    async def _flush_periodically(self) -> None:
        interval = self.redis.settings.flush_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            if self.healthy:
                await self._try_flush()

    def _went_down(self, exc: TransientError) -> None:
        if not self.healthy:
            return
        self.healthy = False
        self.outages += 1
        log.warning("redis unavailable, continuing on in-process state: %s", exc)
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        settings = self.redis.settings
        backoff = Backoff(initial_s=settings.reconnect_initial_s, maximum_s=settings.reconnect_max_s)

        async def ping_and_flush() -> None:
            await self.redis.ping()
            await self.redis.flush()

        await retry_transient(ping_and_flush, attempts=None, backoff=backoff)
        self.healthy = True
        self._reconnect = None
        log.info("redis reconnected; backlog written")
