"""Faults on a real broker, compared value by value with in-process replay of the same files.

The input is the shared BTCUSDT and ETHUSDT daily klines with `cryptonews.csv`, published by
`sigstream replay --to-kafka` as users do, scored by the lexicon model (the faults are about the worker,
not the model). A fault may re-send signals (at-least-once), never change or lose one: every signal replay
makes arrives, its first copy equals replay's, and every later copy carries the same id and the same values.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from adapters.kafka.client import ensure_topics
from tests.integration.streaming import REPO, WorkerProcess, env_for, read_topic, settings_for, signal_records
from tests.support.data import shared_data_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

# The lexicon model at a transformer's pace: the stop lands mid-stream, not after the worker has finished.
PACED = "tests.support.lexicon_model:PacedLexiconSentimentModel"

_EXPECTED: dict[str, list[dict]] = {}


def _inputs() -> list[str]:
    data = shared_data_dir()
    return [str(data / "bybit" / "BTCUSDT_1d.csv"), str(data / "bybit" / "ETHUSDT_1d.csv"),
            "--news", str(data / "news" / "cryptonews.csv"), "--interval", "1d"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=500, check=False)


async def _expected(tmp_path: Path, env: dict[str, str]) -> list[dict]:
    if "replay" not in _EXPECTED:
        out = tmp_path / "replay.jsonl"
        result = await asyncio.to_thread(
            _cli, ["replay", *_inputs(), "--model", PACED, "--signals-out", str(out), "--no-progress"], env
        )
        assert result.returncode == 0, result.stderr[-3000:]
        _EXPECTED["replay"] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return _EXPECTED["replay"]


def check_against_replay(got: list[dict], expected: list[dict]) -> dict[str, int]:
    """0 missing, 0 changed, duplicates identical to their first copy; returns the figures."""
    first: dict[str, dict] = {}
    duplicates = 0
    for record in got:
        seen = first.get(record["id"])
        if seen is None:
            first[record["id"]] = record
            continue
        duplicates += 1
        assert record == seen, f"a re-sent signal differs from its first copy:\n{record}\n{seen}"
    want = {s["id"]: s for s in expected}
    missing = sorted(set(want) - set(first))
    extra = sorted(set(first) - set(want))
    assert not missing, f"{len(missing)} missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} signals replay never made, e.g. {extra[:3]}"
    changed = [i for i, s in want.items() if first[i] != s]
    assert not changed, f"{len(changed)} changed, e.g.\nkafka  {first[changed[0]]}\nreplay {want[changed[0]]}"
    return {"signals": len(expected), "received": len(got), "duplicates": duplicates}


async def _wait_for_count(settings, count: int, worker: WorkerProcess, timeout_s: float = 300) -> list[dict]:
    """Signals read as they come (polled every 0.1 s), until ``count`` distinct ids have arrived."""
    from adapters.kafka.client import make_consumer

    consumer = make_consumer(settings, settings.topics.signals)
    await consumer.start()
    got: list[dict] = []
    ids: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            records = signal_records([r for rs in batch.values() for r in rs])
            got += records
            ids.update(s["id"] for s in records)
            if len(ids) >= count:
                return got
            worker.assert_alive()
    finally:
        await consumer.stop()
    raise AssertionError(f"{len(ids)} of {count} signals; worker log:\n{worker.log()}")


@pytest.mark.parametrize("backlog", [False, True], ids=["live", "backlog"])
@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_worker_stopped_at_half_way_and_restarted_gives_replays_signals(
    kafka_bootstrap: str, unique: str, tmp_path: Path, fault: signal.Signals, backlog: bool
) -> None:
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    env = env_for(settings, tmp_path / "faust")
    expected = await _expected(tmp_path, env)
    publish_args = ["replay", *_inputs(), "--to-kafka", kafka_bootstrap, "--speed", "max"]

    publisher = None
    if backlog:
        published = await asyncio.to_thread(_cli, publish_args, env)
        assert published.returncode == 0, published.stderr[-3000:]
    first = WorkerProcess(settings, tmp_path / "worker1", model=PACED, args=("--interval", "1d"))
    first.start()
    if not backlog:
        publisher = asyncio.create_task(asyncio.to_thread(_cli, publish_args, env))
    try:
        await _wait_for_count(settings, len(expected) // 2, first)
        stopped_at = time.monotonic()
        first.stop(fault, timeout=30)
        second = WorkerProcess(settings, tmp_path / "worker2", model=PACED, args=("--interval", "1d"))
        second.start()
        try:
            got = await _wait_for_count(settings, len(expected), second)
            recovered_s = time.monotonic() - stopped_at
            await asyncio.sleep(2)  # late duplicates would show up now
            got = signal_records(await read_topic(settings, settings.topics.signals, idle_s=2))
            second.assert_alive()
        finally:
            second.stop()
        if publisher is not None:
            result = await publisher
            assert result.returncode == 0, result.stderr[-3000:]
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.stop()
    figures = check_against_replay(got, expected)
    print(f"{fault.name} {'backlog' if backlog else 'live'}: {figures}, all signals {recovered_s:.1f} s after the stop")
    if fault == signal.SIGTERM:
        assert figures["duplicates"] == 0, second.log()
    assert second.log_path is not None
    second_log = second.log_path.read_text()
    assert "restored its state" in second_log
    resumed = re.search(r"worker stopping: (\d+) market records, (\d+) news records", second_log)
    assert resumed is not None and int(resumed.group(1)) + int(resumed.group(2)) > 0, "the stop came after the end"


async def test_a_resent_news_record_and_a_blank_headline_change_no_signal(kafka_bootstrap: str, unique: str,
                                                                          tmp_path: Path) -> None:
    from adapters.kafka.client import make_producer
    from engine.serialization import decode_event, encode_event
    from tests.integration.streaming import decoded, news
    from tests.integration.test_kafka_worker import publish, recording, replay_signals

    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    items = recording(12)
    blank = news("blank-1", "   ", items[5].ts_init + 1)
    with_blank = [*items[:6], blank, *items[6:]]
    expected = await replay_signals(items)
    assert await replay_signals(with_blank) == expected  # replay dead-letters it too: no signal changes
    worker = WorkerProcess(settings, tmp_path / "worker")
    worker.start()
    try:
        await publish(settings, with_blank)
        got = await _wait_for_count(settings, len(expected), worker)
        # The exact bytes of every news record again, as a producer retrying by hand would send them.
        copies = [r for r in await read_topic(settings, settings.topics.news_raw, idle_s=2)
                  if decode_event(r.value) != blank]
        producer = make_producer(settings)
        await producer.start()
        try:
            for r in copies:
                await producer.send_and_wait(settings.topics.news_raw, r.value, key=r.key, partition=r.partition,
                                             headers=list(r.headers or ()))
            resent_unstamped = encode_event(next(i for i in items if i.__class__ is type(blank)))
            await producer.send_and_wait(settings.topics.news_raw, resent_unstamped, key=b"again")
        finally:
            await producer.stop()
        await asyncio.sleep(5)
        got = signal_records(await read_topic(settings, settings.topics.signals, idle_s=2))
        dead = decoded(await read_topic(settings, settings.topics.deadletter, idle_s=2))
        worker.assert_alive()
    finally:
        worker.stop()
    assert got == expected  # no second vote, no extra signal, nothing changed
    assert [d.raw for d in dead if "empty text" in d.reason] == ["blank-1"]  # dead-lettered once, with its reason
    counted = re.search(r"(\d+) duplicate news", worker.log())
    assert counted is not None and int(counted.group(1)) == len(copies) + settings.partitions, worker.log()


async def test_sigterm_with_the_broker_gone_exits_within_30_s_and_says_what_was_not_committed(
    kafka_service, unique: str, tmp_path: Path
) -> None:
    from tests.integration.test_kafka_worker import publish, recording

    settings = settings_for(kafka_service.bootstrap, unique)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker")
    worker.start()
    await publish(settings, recording(10))
    await _wait_for_count(settings, 5, worker)
    try:
        await asyncio.to_thread(kafka_service.stop)
        started = time.monotonic()
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.proc.wait, 45)
        took = time.monotonic() - started
    finally:
        await asyncio.to_thread(kafka_service.start)
    print(f"stopped in {took:.1f} s with exit {code}")
    assert took < 30, worker.log()
    assert worker.log_path is not None
    # It says so, whether the stop finished (exit 0) or gave up (exit 1).
    assert re.search(r"(could not be|are not) committed", log_text := worker.log_path.read_text()), log_text[-3000:]


async def test_redis_down_then_a_worker_restart_keeps_market_bars_equal_to_replay(
    kafka_bootstrap: str, redis_service, unique: str, tmp_path: Path
) -> None:
    from engine.batcher import MicroBatcher
    from engine.events import Features
    from engine.pipeline import SignalEngine
    from engine.runtime import Runtime, RuntimeSinks
    from engine.serialization import decode_event
    from tests.integration.test_kafka_worker import ListSink, publish, recording
    from tests.support.lexicon_model import LexiconSentimentModel

    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    items = recording(60)
    features_sink = ListSink()
    await Runtime(SignalEngine(), MicroBatcher(LexiconSentimentModel()),
                  RuntimeSinks(ListSink(), features=[features_sink])).run(items)
    expected = {(f.symbol, f.start): f.values() for f in features_sink.items}
    env = {"SIGSTREAM_REDIS__KEY_PREFIX": f"faults-{unique}", "SIGSTREAM_REDIS__SOCKET_TIMEOUT_S": "0.5",
           "SIGSTREAM_REDIS__RECONNECT_MAX_S": "0.5"}
    third = len(items) // 3
    worker = WorkerProcess(settings, tmp_path / "worker1", redis=redis_service.url, extra_env=env)
    worker.start()
    try:
        await publish(settings, items[:third])
        await _wait_for_count(settings, 10, worker)
        await asyncio.to_thread(redis_service.stop)
        try:
            await publish(settings, items[third : 2 * third])
            await asyncio.sleep(20)
            worker.assert_alive()
        finally:
            await asyncio.to_thread(redis_service.start)
        assert worker.stop() == 0, worker.log()
        worker = WorkerProcess(settings, tmp_path / "worker2", redis=redis_service.url, extra_env=env)
        worker.start()
        await publish(settings, items[2 * third :])
        await asyncio.sleep(1)
        bars = [decode_event(r.value) for r in await read_topic(settings, settings.topics.market_bars,
                                                                count=len(expected), timeout_s=120)]
        worker.assert_alive()
    finally:
        worker.stop()
    got = {(f.symbol, f.start): f.values() for f in bars if isinstance(f, Features)}
    assert got.keys() == expected.keys()
    worst = 0.0
    for key, want in expected.items():
        for name, value in want.items():
            have = got[key][name]
            assert (have is None) == (value is None), (key, name)
            if value is not None and have is not None:
                worst = max(worst, abs(have - value) / max(1.0, abs(value)))
    print(f"redis outage + restart: {len(got)} bars, worst relative feature error {worst:.2e}")
    assert worst <= 1e-7


async def test_two_workers_one_killed_the_survivor_takes_over_with_replays_signals(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=2)
    await ensure_topics(settings)
    env = env_for(settings, tmp_path / "faust")
    expected = await _expected(tmp_path, env)
    workers = [WorkerProcess(settings, tmp_path / f"worker{i}", model=PACED, args=("--interval", "1d"))
               for i in (1, 2)]
    try:
        for w in workers:
            w.start()
        async with asyncio.timeout(120):
            while not all("Ready" in w.log() for w in workers):  # noqa: ASYNC110 - polls another process's log
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        publisher = asyncio.create_task(asyncio.to_thread(
            _cli, ["replay", *_inputs(), "--to-kafka", kafka_bootstrap, "--speed", "max"], env))
        await _wait_for_count(settings, len(expected) // 2, workers[1])
        killed_at = time.monotonic()
        workers[0].stop(signal.SIGKILL, timeout=30)
        got = await _wait_for_count(settings, len(expected), workers[1])
        took = time.monotonic() - killed_at
        result = await publisher
        assert result.returncode == 0, result.stderr[-3000:]
        await asyncio.sleep(2)
        got = signal_records(await read_topic(settings, settings.topics.signals, idle_s=2))
        workers[1].assert_alive()
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.stop()
    figures = check_against_replay(got, expected)
    print(f"2 workers, kill -9 one: {figures}, every signal {took:.1f} s after the kill")


async def test_broker_stopped_for_20_s_while_publishing_loses_no_signal(
    kafka_service, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_service.bootstrap, unique)
    await ensure_topics(settings)
    env = env_for(settings, tmp_path / "faust")
    expected = await _expected(tmp_path, env)
    worker = WorkerProcess(settings, tmp_path / "worker", model=PACED, args=("--interval", "1d"))
    worker.start()
    # ~60 s of publishing (the daily files span five years), so the outage lands mid-publish.
    publisher = asyncio.create_task(asyncio.to_thread(
        _cli, ["replay", *_inputs(), "--to-kafka", kafka_service.bootstrap, "--speed", "2500000"], env))
    try:
        await _wait_for_count(settings, len(expected) // 10, worker)
        await asyncio.to_thread(kafka_service.stop)
        try:
            await asyncio.sleep(20)
        finally:
            await asyncio.to_thread(kafka_service.start)
        result = await publisher
        assert result.returncode == 0, result.stderr[-3000:]
        got = await _wait_for_count(settings, len(expected), worker, timeout_s=400)
        await asyncio.sleep(2)
        got = signal_records(await read_topic(settings, settings.topics.signals, idle_s=2))
        worker.assert_alive()
    finally:
        worker.stop()
    figures = check_against_replay(got, expected)
    print(f"broker stopped 20 s mid-publish: {figures}; publisher: {result.stderr.strip().splitlines()[-1]}")


async def test_worker_started_from_an_empty_folder_works_and_keeps_its_data_under_the_cache(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    import os

    from tests.integration.streaming import LEXICON
    from tests.integration.test_kafka_worker import publish, recording, replay_signals

    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    empty, cache = tmp_path / "empty", tmp_path / "cache"
    empty.mkdir()
    env = env_for(settings, tmp_path / "unused")
    del env["SIGSTREAM_KAFKA__DATA_DIR"]  # the default, as an operator starts it
    env |= {"SIGSTREAM_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - a log file handed to the subprocess
        proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived worker process, not a blocking call
            [sys.executable, "-m", "sigstream.cli", "worker", "--interval", "1m", "--model", LEXICON],
            cwd=empty, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        items = recording(8)
        expected = await replay_signals(items)
        await publish(settings, items)
        got = signal_records(await read_topic(settings, settings.topics.signals, count=len(expected), timeout_s=90))
        assert proc.poll() is None, log_path.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0, log_path.read_text()[-3000:]
    assert got == expected
    assert (cache / "faust").is_dir() and os.listdir(empty) == []  # nothing written where it was started
