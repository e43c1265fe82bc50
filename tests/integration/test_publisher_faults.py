"""`sigstream replay --to-kafka` against broker faults, on a real broker, as users run it (a subprocess).

The contract: whatever happens to the broker or the publisher, market.raw, news.raw and deadletter end up
holding exactly what an uninterrupted publish of the same recording writes: the same records, values and
ordering headers per partition, in order, each once (``sigstream.seq`` never repeats on a partition).
These tests stop the shared session broker; each restarts it before it ends, even when it fails.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.kafka.client import TopicPartition, ensure_topics, make_consumer
from adapters.kafka.config import KafkaSettings
from adapters.kafka.ordering import MARKET_HEADER, NEWS_HEADER, parse_market_header
from adapters.kafka.publisher import SEQ_HEADER
from sigstream.demo import write_demo_recording
from tests.integration.conftest import KafkaService
from tests.integration.streaming import REPO, env_for, read_topic, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 4  # BTCUSDT -> 2, ETHUSDT -> 1; partitions 0 and 3 hold only news copies and watermarks
MINUTES = 2_880  # 5,760 kline frames and 128 news: 43 s at --speed 4000
SPEED = "4000"
BAD_LINES = 5  # corrupt lines in the recording: dead letters on the deadletter topic

Record = tuple[int, bytes | None, bytes, dict[str, bytes]]  # offset, key, value, headers
Snapshot = dict[tuple[str, int], list[Record]]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("publisher") / "demo.jsonl"
    write_demo_recording(path, minutes=MINUTES)
    lines = path.read_text().splitlines(keepends=True)
    step = len(lines) // (BAD_LINES + 1)
    for k in range(BAD_LINES, 0, -1):
        lines.insert(k * step, f'{{"ts_init": "corrupt line {k}"\n')
    path.write_text("".join(lines))
    return path


def _publisher(settings: KafkaSettings, recording: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sigstream.cli", "replay", str(recording), "--to-kafka", settings.bootstrap, *args]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env_for(settings, log.parent / "faust"), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _publish(settings: KafkaSettings, recording: Path, log: Path, *args: str, timeout: float = 180) -> str:
    """Run a publisher to its end; returns its output, asserting exit 0."""
    proc = _publisher(settings, recording, log, *args)
    try:
        rc = proc.wait(timeout)
    finally:
        _kill(proc)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    return text


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def _report(output: str) -> dict[str, int]:
    """The numbers of the publisher's last "published to ..." line."""
    line = [line for line in output.splitlines() if line.startswith("published to ")][-1]
    numbers = {
        name: int(match.group(1).replace(",", ""))
        for name, pattern in (
            ("items", r"([\d,]+) items read"), ("market", r"([\d,]+) market records"), ("news", r"([\d,]+) news \("),
            ("copies", r"\(([\d,]+) copies\)"), ("dead", r"([\d,]+) dead letters"),
            ("watermarks", r"(\d+) watermarks"),
            ("outages", r"(\d+) outage"), ("retries", r"(\d+) retries"),
        )
        if (match := re.search(pattern, line))
    }
    already = re.search(r"([\d,]+) already published", line)
    numbers["already"] = int(already.group(1).replace(",", "")) if already else 0
    print(line)  # the measured figures, for -s
    return numbers


async def _snapshot(settings: KafkaSettings) -> Snapshot:
    """Every record of market.raw, news.raw and deadletter, per partition in offset order."""
    out: Snapshot = {}
    topics = settings.topics
    for kind, topic in (("market", topics.market_raw), ("news", topics.news_raw), ("dead", topics.deadletter)):
        records = await read_topic(settings, topic, idle_s=2)
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            # A watermark's value is the wall clock at the end of the publish: the same for no two publishes.
            value = b"<watermark>" if not r.key else r.value
            out.setdefault((kind, r.partition), []).append((r.offset, r.key, value, dict(r.headers)))
    return out


async def _market_records(settings: KafkaSettings) -> int:
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.market_raw, p) for p in range(settings.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def _wait_for_records(settings: KafkaSettings, at_least: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the publisher (which must be running) has written ``at_least`` market records; topics must exist."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"publisher exited early:\n{_tail(log)}"
        if await _market_records(settings) >= at_least:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} market records after 90 s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _seqs(records: list[Record]) -> list[int]:
    return [int(headers[SEQ_HEADER]) for *_, headers in records]


def _assert_exactly_once_and_ordered(snapshot: Snapshot) -> None:
    """No seq twice on a partition, seqs in publish order, and ordering headers that say exactly that order."""
    for (kind, partition), records in snapshot.items():
        seqs = _seqs(records)
        assert seqs == sorted(set(seqs)), f"{kind}[{partition}]: a seq repeats or goes back"
        assert [offset for offset, *_ in records] == list(range(len(records))), f"{kind}[{partition}]: offset gap"
    for partition in range(PARTITIONS):
        market, news = snapshot.get(("market", partition), []), snapshot.get(("news", partition), [])
        market_seqs, news_seqs = _seqs(market), _seqs(news)
        for *_, headers in market:
            # The news.raw[p] offset after the news copies published before this record: no more, no less.
            assert int(headers[NEWS_HEADER]) == bisect.bisect_left(news_seqs, int(headers[SEQ_HEADER]))
        for *_, headers in news:
            expected = {partition: bisect.bisect_left(market_seqs, int(headers[SEQ_HEADER]))}
            assert parse_market_header(headers[MARKET_HEADER]) == expected


@pytest.fixture(scope="module")
def reference(kafka_service: KafkaService, recording: Path, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """What an uninterrupted `replay --to-kafka --speed max` of the recording writes."""
    settings = settings_for(kafka_service.bootstrap, f"ref{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)
    log = tmp_path_factory.mktemp("reference") / "publisher.log"
    report = _report(_publish(settings, recording, log))
    snapshot = asyncio.run(_snapshot(settings))
    _assert_exactly_once_and_ordered(snapshot)
    assert report["items"] == MINUTES * 2 + 128 + BAD_LINES
    assert report["dead"] == BAD_LINES and report["market"] == MINUTES * 2 and report["copies"] == 128 * PARTITIONS
    assert sum(len(v) for (kind, _), v in snapshot.items() if kind == "dead") == BAD_LINES
    return snapshot


def _counts(snapshot: Snapshot) -> dict[tuple[str, int], int]:
    return {key: len(records) for key, records in sorted(snapshot.items())}


@pytest.fixture
def broker(kafka_service: KafkaService) -> Iterator[KafkaService]:
    """The session broker, answering again when the test ends, whatever the test did to it."""
    yield kafka_service
    if not _answers(kafka_service.bootstrap):
        kafka_service.start()


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


async def test_a_20_s_broker_outage_loses_and_duplicates_nothing(
    broker: KafkaService, recording: Path, reference: Snapshot, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(broker.bootstrap, unique, partitions=PARTITIONS)
    await ensure_topics(settings)
    log = tmp_path / "publisher.log"
    proc = _publisher(settings, recording, log, "--speed", SPEED)
    try:
        await _wait_for_records(settings, 300, proc, log)
        stopped = time.monotonic()
        broker.stop()
        try:
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
            assert proc.poll() is None, f"the publisher exited during the outage:\n{_tail(log)}"
        finally:
            broker.start()  # returns once the broker answers
        print(f"broker away for {time.monotonic() - stopped:.1f} s")
        rc = await asyncio.to_thread(proc.wait, 180)
    finally:
        _kill(proc)
    output = log.read_text(errors="replace")
    assert rc == 0, output[-4000:]
    report = _report(output)
    assert report["outages"] >= 1 and report["retries"] >= 1, "the publisher never noticed the outage"
    assert report["items"] == report["market"] + report["news"] + report["dead"]
    snapshot = await _snapshot(settings)
    assert _counts(snapshot) == _counts(reference)
    _assert_exactly_once_and_ordered(snapshot)
    assert snapshot == reference


async def test_resume_after_sigkill_publishes_every_record_exactly_once(
    kafka_bootstrap: str, recording: Path, reference: Snapshot, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=PARTITIONS)
    await ensure_topics(settings)
    log = tmp_path / "publisher.log"
    proc = _publisher(settings, recording, log, "--speed", "20000")
    try:
        await _wait_for_records(settings, 1_500, proc, log)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        _kill(proc)
    partial = await _snapshot(settings)
    written = sum(len(records) for records in partial.values())
    assert 0 < written < sum(len(records) for records in reference.values())

    output = _publish(settings, recording, tmp_path / "resume.log", "--resume")
    report = _report(output)
    skipped = int(re.search(r"resume: ([\d,]+) items already", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert skipped == report["already"] > 0
    assert report["items"] == report["market"] + report["news"] + report["dead"] + skipped
    snapshot = await _snapshot(settings)
    assert _counts(snapshot) == _counts(reference)
    _assert_exactly_once_and_ordered(snapshot)
    assert snapshot == reference

    # Resuming a complete publish writes nothing.
    again = _report(_publish(settings, recording, tmp_path / "again.log", "--resume"))
    assert again["already"] == again["items"] and again["market"] == again["news"] == again["watermarks"] == 0
    assert await _snapshot(settings) == reference


async def test_resume_with_nothing_published_publishes_everything(
    kafka_bootstrap: str, recording: Path, reference: Snapshot, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=PARTITIONS)
    output = _publish(settings, recording, tmp_path / "publisher.log", "--resume")
    assert "resume: 0 items already on the topics were skipped" in output
    assert _report(output)["already"] == 0
    assert await _snapshot(settings) == reference


async def test_a_broker_that_never_comes_back_fails_the_publish_after_max_outage(
    broker: KafkaService, recording: Path, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(broker.bootstrap, unique, partitions=PARTITIONS)
    await ensure_topics(settings)
    log = tmp_path / "publisher.log"
    proc = _publisher(settings, recording, log, "--speed", SPEED, "--max-outage-s", "5")
    try:
        await _wait_for_records(settings, 300, proc, log)
        stopped = time.monotonic()
        try:
            broker.stop()
            rc = await asyncio.to_thread(proc.wait, 90)
            waited = time.monotonic() - stopped
        finally:
            broker.start()
    finally:
        _kill(proc)
    output = log.read_text(errors="replace")
    last = output.strip().splitlines()[-1]
    print(f"gave up {waited:.1f} s after the broker stop began: {last}")
    assert rc == 1, output[-4000:]
    assert last.startswith("fatal: ") and broker.bootstrap in last, output[-4000:]
    assert "Traceback" not in output
    assert 5 <= waited <= 30


def test_an_unreachable_bootstrap_fails_after_max_outage(recording: Path, unique: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    settings = settings_for(f"127.0.0.1:{port}", unique, partitions=PARTITIONS)
    started = time.monotonic()
    proc = _publisher(settings, recording, tmp_path / "publisher.log", "--max-outage-s", "2")
    try:
        rc = proc.wait(60)
    finally:
        _kill(proc)
    output = (tmp_path / "publisher.log").read_text(errors="replace")
    last = output.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("fatal: ") and f"127.0.0.1:{port}" in last, output[-3000:]
    assert time.monotonic() - started < 30
