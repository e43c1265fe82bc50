"""RedisFeatureStore against a real redis-server started by deploy/redis/redis.sh."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from adapters.inprocess.store import InMemoryFeatureStore
from adapters.redis.config import RedisSettings
from adapters.redis.store import RedisFeatureStore, ResilientFeatureStore
from engine.errors import TransientError
from engine.events import Bar, Features, Interval
from engine.pipeline import SignalEngine


def make_bar(symbol: str, i: int, close: float | None = None) -> Bar:
    start = 1_700_000_000_000 + i * 60_000
    price = close if close is not None else 100.0 + (i % 7) - (i % 3) * 0.5
    return Bar(
        symbol,
        Interval.M1,
        start,
        price,
        price + 1,
        price - 1,
        price,
        10.0 + i % 5,
        start + 60_000,
        start + 60_001,
    )


def run_engine(symbol: str, n: int) -> tuple[list[Bar], list[Features]]:
    engine = SignalEngine()
    bars = [make_bar(symbol, i) for i in range(n)]
    feats = []
    for bar in bars:
        out = engine.on_bar(bar)
        assert out is not None
        feats.append(out[0])
    return bars, feats


async def save_and_flush(store: RedisFeatureStore, bars: list[Bar], feats: list[Features]) -> None:
    for bar, f in zip(bars, feats, strict=True):
        await store.save(bar, f)
    await store.flush()


@pytest.fixture
def settings(redis_url: str, unique: str) -> RedisSettings:
    return RedisSettings(url=redis_url, key_prefix=f"test-{unique}", max_bars=50, ttl_s=120, flush_max_items=1000)


async def test_saved_features_and_bars_round_trip_through_redis(settings: RedisSettings) -> None:
    bars, feats = run_engine("BTCUSDT", 30)
    store = RedisFeatureStore(settings)
    await save_and_flush(store, bars, feats)
    await store.close()

    fresh = RedisFeatureStore(settings)  # a different client: the data really is in Redis
    assert await fresh.latest("BTCUSDT") == feats[-1]
    assert await fresh.recent_bars("BTCUSDT", 10) == bars[-10:]
    assert await fresh.symbols() == ["BTCUSDT"]
    assert await fresh.latest("ETHUSDT") is None
    await fresh.close()


async def test_bar_window_is_bounded_and_keys_carry_a_ttl(settings: RedisSettings) -> None:
    bars, feats = run_engine("ETHUSDT", 80)
    store = RedisFeatureStore(settings)
    await save_and_flush(store, bars, feats)
    raw = aioredis.Redis.from_url(settings.url)
    assert await raw.zcard(store.bars_key("ETHUSDT")) == settings.max_bars
    assert 0 < await raw.ttl(store.bars_key("ETHUSDT")) <= settings.ttl_s
    assert 0 < await raw.ttl(store.features_key("ETHUSDT")) <= settings.ttl_s
    fields = await raw.hgetall(store.features_key("ETHUSDT"))
    assert float(fields[b"rsi_14"]) == pytest.approx(feats[-1].rsi_14)
    assert await store.recent_bars("ETHUSDT", 1000) == bars[-settings.max_bars :]
    await raw.aclose()
    await store.close()


async def test_writes_for_many_symbols_and_bars_share_one_round_trip(settings: RedisSettings) -> None:
    store = RedisFeatureStore(settings)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
        bars, feats = run_engine(symbol, 25)
        for bar, f in zip(bars, feats, strict=True):
            await store.save(bar, f)
    assert store.round_trips == 0  # 100 saves, all buffered
    await store.flush()
    assert store.round_trips == 1
    warm = await store.warm_up(limit=25)
    assert sorted(warm) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert all(len(b) == 25 for b in warm.values())
    await store.close()


async def test_a_bar_written_twice_is_stored_once(settings: RedisSettings) -> None:
    # A pipeline whose reply was lost is sent again, and a restarted worker re-saves the bars it
    # re-processes: neither may leave a second copy for the warm-up to feed into the features.
    bars, feats = run_engine("BTCUSDT", 10)
    store = RedisFeatureStore(settings)
    await save_and_flush(store, bars, feats)
    await save_and_flush(store, bars[5:], feats[5:])
    assert await store.recent_bars("BTCUSDT", 100) == bars
    await store.close()


async def test_saves_made_while_a_flush_is_in_flight_are_written_by_the_next_flush(
    settings: RedisSettings,
) -> None:
    bars, feats = run_engine("BTCUSDT", 4)
    store = RedisFeatureStore(settings)
    for bar, f in zip(bars[:2], feats[:2], strict=True):
        store.buffer(bar, f)
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0)  # the pipeline is built and sent; its reply is not back yet
    for bar, f in zip(bars[2:], feats[2:], strict=True):
        store.buffer(bar, f)
    await flushing
    assert store.pending == 2
    await store.flush()
    assert store.pending == 0
    assert await store.recent_bars("BTCUSDT", 100) == bars
    assert await store.latest("BTCUSDT") == feats[-1]
    await store.close()


async def test_cold_engine_warmed_from_redis_matches_the_engine_that_wrote_it(settings: RedisSettings) -> None:
    # Fewer bars than max_bars: Redis holds the whole history, so the warmed engine is exactly the same.
    bars, feats = run_engine("BTCUSDT", 45)
    store = RedisFeatureStore(settings)
    await save_and_flush(store, bars, feats)

    cold = SignalEngine()
    warm = await RedisFeatureStore(settings).warm_up(["BTCUSDT"])
    cold.warm("BTCUSDT", warm["BTCUSDT"])
    assert cold.latest_features("BTCUSDT") == feats[-1]
    hot = SignalEngine()
    for bar in bars:
        hot.on_bar(bar)
    nxt = make_bar("BTCUSDT", 45)
    cold_out, hot_out = cold.on_bar(nxt), hot.on_bar(nxt)
    assert cold_out is not None and hot_out is not None
    assert cold_out[0] == hot_out[0]
    await store.close()


async def test_redis_down_raises_transient_error_and_keeps_writes_pending(
    settings: RedisSettings, redis_service
) -> None:
    bars, feats = run_engine("BTCUSDT", 5)
    store = RedisFeatureStore(settings.model_copy(update={"socket_timeout_s": 0.5}))
    await store.save(bars[0], feats[0])
    redis_service.stop()
    try:
        with pytest.raises(TransientError):
            await store.flush()
        assert store.pending == 1
        with pytest.raises(TransientError):
            await store.latest("BTCUSDT")
    finally:
        redis_service.start()
    await store.flush()
    assert store.pending == 0
    assert await store.latest("BTCUSDT") == feats[0]
    await store.close()


async def test_engine_keeps_running_on_local_state_while_redis_is_down_then_catches_up(
    settings: RedisSettings, redis_service
) -> None:
    bars, feats = run_engine("BTCUSDT", 40)
    fast = settings.model_copy(
        update={
            "socket_timeout_s": 0.3,
            "flush_interval_ms": 20,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
        }
    )
    store = ResilientFeatureStore(RedisFeatureStore(fast), InMemoryFeatureStore())
    for bar, f in zip(bars[:10], feats[:10], strict=True):
        await store.save(bar, f)
    await asyncio.sleep(0.1)
    assert store.redis.pending == 0

    redis_service.stop()
    try:
        for bar, f in zip(bars[10:30], feats[10:30], strict=True):
            await store.save(bar, f)  # never raises: the engine must not notice the outage
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        assert not store.healthy
        assert store.outages == 1
        assert await store.latest("BTCUSDT") == feats[29]  # served from in-process state
        assert store.redis.pending == 20
    finally:
        redis_service.start()

    for bar, f in zip(bars[30:], feats[30:], strict=True):
        await store.save(bar, f)
    for _ in range(100):
        if store.healthy and store.redis.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert store.healthy
    assert store.redis.pending == 0
    check = RedisFeatureStore(fast)
    assert await check.latest("BTCUSDT") == feats[-1]
    # Nothing written during the outage was lost. (The test Redis runs without persistence, so its
    # restart dropped the 10 bars written before the outage; a production Redis keeps them.)
    assert await check.recent_bars("BTCUSDT", 40) == bars[10:]
    await check.close()
    await store.close()
