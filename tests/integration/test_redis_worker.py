"""The worker with the Redis feature cache: features land in Redis, an outage does not stop signals,
and a restarted worker warms its features from Redis."""

from __future__ import annotations

import asyncio

import pytest

from adapters.kafka.client import ensure_topics
from adapters.redis.config import RedisSettings
from adapters.redis.store import RedisFeatureStore
from engine.errors import TransientError
from tests.integration.streaming import WorkerProcess, read_topic, settings_for
from tests.integration.test_kafka_worker import publish, recording, replay_signals, signals_of

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str, unique: str):
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    return settings


def worker_with_redis(settings, tmp_path, redis_url: str, prefix: str, *, snapshots: bool = True) -> WorkerProcess:
    w = WorkerProcess(
        settings,
        tmp_path / "worker",
        redis=redis_url,
        extra_env={
            "SIGSTREAM_REDIS__KEY_PREFIX": prefix,
            "SIGSTREAM_REDIS__SOCKET_TIMEOUT_S": "0.5",
            "SIGSTREAM_REDIS__RECONNECT_MAX_S": "0.5",
            "SIGSTREAM_KAFKA__SNAPSHOTS": "true" if snapshots else "false",
        },
    )
    w.start()
    return w


async def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    for _ in range(int(timeout_s / 0.2)):
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_worker_keeps_signalling_through_a_redis_outage_and_catches_up(
    kafka_settings, redis_service, tmp_path, unique
) -> None:
    prefix = f"w-{unique}"
    store = RedisFeatureStore(RedisSettings(url=redis_service.url, key_prefix=prefix))
    items = recording(30)
    expected = await replay_signals(items)
    third = len(items) // 3
    worker = worker_with_redis(kafka_settings, tmp_path, redis_service.url, prefix)
    try:
        await publish(kafka_settings, items[:third])
        await signals_of(kafka_settings, 1, worker)
        assert await wait_for(lambda: _has_features(store, "BTCUSDT")), worker.log()

        redis_service.stop()
        try:
            await publish(kafka_settings, items[third : 2 * third])
            await asyncio.sleep(3)
            worker.assert_alive()
        finally:
            redis_service.start()
        await publish(kafka_settings, items[2 * third :])
        got = await signals_of(kafka_settings, len(expected), worker)
        worker.assert_alive()
        assert {(s["symbol"], s["ts_event"]) for s in got} == {(s["symbol"], s["ts_event"]) for s in expected}
        # The last bar's features reach Redis once it is back (the worker reconnected on its own).
        last_btc = [s for s in expected if s["symbol"] == "BTCUSDT" and s["cause"] == "bar"][-1]
        last_btc_start = last_btc["ts_event"] - 60_000

        async def caught_up() -> bool:
            try:
                latest = await store.latest("BTCUSDT")
            except TransientError:  # this test's own connection died with the old server
                return False
            return latest is not None and latest.start == last_btc_start

        assert await wait_for(caught_up), (await store.latest("BTCUSDT"), last_btc_start, worker.log()[-1500:])
        assert "redis unavailable" in worker.log()
    finally:
        worker.stop()
        await store.close()


async def _has_features(store: RedisFeatureStore, symbol: str) -> bool:
    return await store.latest(symbol) is not None


async def test_restarted_worker_warms_its_features_from_redis(kafka_settings, redis_service, tmp_path, unique) -> None:
    prefix = f"warm-{unique}"
    items = recording(30)
    expected = await replay_signals(items)
    split = len(items) - 6
    # Without state snapshots, so the restarted worker's features can only come from Redis.
    worker = worker_with_redis(kafka_settings, tmp_path, redis_service.url, prefix, snapshots=False)
    await publish(kafka_settings, items[:split])
    await signals_of(kafka_settings, 1, worker)
    await read_topic(kafka_settings, kafka_settings.topics.signals, idle_s=3)  # let the first half finish
    assert worker.stop() == 0
    await publish(kafka_settings, items[split:])
    worker2 = worker_with_redis(kafka_settings, tmp_path, redis_service.url, prefix, snapshots=False)
    try:
        got = await signals_of(kafka_settings, len(expected), worker2)
        assert {(s["symbol"], s["ts_event"]) for s in got} == {(s["symbol"], s["ts_event"]) for s in expected}
        # Every bar signal, including those after the restart, carries exactly replay's features:
        # the second worker's feature state came back from Redis.
        exp = {(s["symbol"], s["ts_event"]): s["features"] for s in expected if s["cause"] == "bar"}
        after_restart = [s for s in got if s["cause"] == "bar" and s["ts_init"] > items[split - 1].ts_init]
        assert after_restart
        for s in got:
            if s["cause"] == "bar":
                assert s["features"] == exp[(s["symbol"], s["ts_event"])]
        assert "warmed 2 symbols from redis" in worker2.log()
    finally:
        worker2.stop()
