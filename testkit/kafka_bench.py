"""Kafka benchmarks against a running broker, through one real ``sigstream worker`` process.

* **raw frames/s**: ``frames`` Bybit ``publicTrade`` frames are published first, then a worker is
  started; the rate is the frames consumed between the first and the last bar it closes, divided by
  the broker timestamps (LogAppendTime of the worker's own output) of those two bars.
* **news -> signal latency**: with the worker caught up, news is produced at ``news_rate``/s; the
  latency of each item is from just before its send to the moment its composite signal is consumed.

Reported, not asserted: ``sigstream bench --kafka URL`` prints these figures.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from adapters.kafka.client import consume, ensure_topics, make_consumer, make_producer
from adapters.kafka.config import KafkaSettings, TopicNames
from adapters.kafka.parsing import encode_frame
from engine.events import NewsItem
from engine.serialization import decode_signal, encode_event

REPO = Path(__file__).resolve().parents[1]  # the worker imports --model specs from the repository root
LEXICON_MODEL = "tests.support.lexicon_model:LexiconSentimentModel"


def trade_frame(symbol: str, i: int, t0: int, per_bar: int) -> dict[str, Any]:
    ts = t0 + (i // per_bar) * 60_000 + (i % per_bar) * (59_000 // per_bar)
    price = 30_000.0 + (i % 97) * 0.5
    return {
        "topic": f"publicTrade.{symbol}",
        "type": "snapshot",
        "ts": ts,
        "data": [
            {
                "T": ts,
                "s": symbol,
                "S": "Buy" if i % 2 else "Sell",
                "v": "0.01",
                "p": f"{price:.1f}",
                "L": "PlusTick",
                "i": f"{symbol}-{i}",
                "BT": False,
            }
        ],
    }


def _settings(bootstrap: str, tag: str, partitions: int, base: KafkaSettings | None = None) -> KafkaSettings:
    topics = TopicNames(**{name: f"bench.{tag}.{default}" for name, default in TopicNames().model_dump().items()})
    # The security settings (SASL, TLS) come from ``base``; the bench's own topics, group and size replace the rest.
    return (base or KafkaSettings()).model_copy(update={
        "bootstrap": bootstrap, "topics": topics, "app_id": f"sigstream-bench-{tag}", "partitions": partitions})


_SECURITY_FIELDS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile",
                    "ssl_certfile", "ssl_keyfile", "ssl_key_password", "ssl_check_hostname")


def _security_env(settings: KafkaSettings) -> dict[str, str]:
    """The security settings as the worker process reads them (``SIGSTREAM_KAFKA__...``); unset ones left out."""
    env: dict[str, str] = {}
    for name in _SECURITY_FIELDS:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()  # handed to the child's environment only, never printed
        env[f"SIGSTREAM_KAFKA__{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _start_worker(settings: KafkaSettings, model: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for name, value in settings.topics.model_dump().items():
        env[f"SIGSTREAM_KAFKA__TOPICS__{name.upper()}"] = value
    env |= _security_env(settings)
    env |= {
        "SIGSTREAM_KAFKA__BOOTSTRAP": settings.bootstrap,
        "SIGSTREAM_KAFKA__APP_ID": settings.app_id,
        "SIGSTREAM_KAFKA__PARTITIONS": str(settings.partitions),
        "SIGSTREAM_KAFKA__DATA_DIR": str(workdir),
        # The bench publishes trade frames, so the engine builds its bars from trades.
        "SIGSTREAM_ENGINE__BARS_FROM": "trades",
    }
    log_path = workdir / "worker.log"
    cmd = [sys.executable, "-m", "sigstream.cli", "worker", "--model", model, "--loglevel", "info"]
    with open(log_path, "wb") as log:
        # S603: argv is this interpreter plus fixed arguments and the caller's model spec, no shell.
        proc = subprocess.Popen(  # noqa: S603
            cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log_path


async def _publish_frames(settings: KafkaSettings, frames: int, per_bar: int) -> dict[str, Any]:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    # Minute-aligned, so each group of ``per_bar`` frames fills exactly one 1m bar; an unaligned
    # start splits groups across bars and the bar count (and the rate) would be off by one.
    t0 = 1_700_000_040_000
    try:
        for i in range(frames):
            frame = trade_frame("BTCUSDT", i, t0, per_bar)
            await producer.send(settings.topics.market_raw, encode_frame(frame, frame["ts"], "bybit"), key=b"BTCUSDT")
        await producer.flush()
    finally:
        await producer.stop()
    return {"frames": frames, "frames_per_bar": per_bar}


async def run_kafka_bench(
    bootstrap: str,
    *,
    frames: int = 200_000,
    frames_per_bar: int = 500,
    news_rate: float = 50.0,
    news_seconds: float = 20.0,
    model: str = LEXICON_MODEL,
    partitions: int = 1,
    security: KafkaSettings | None = None,
) -> dict[str, Any]:
    """Run both measurements with a fresh set of topics; returns the figures as a dict.

    ``security``: settings whose security fields (SASL, TLS) every client and the worker use; None: PLAINTEXT.
    """
    tag = uuid.uuid4().hex[:8]
    settings = _settings(bootstrap, tag, partitions, security)
    await ensure_topics(settings)
    result: dict[str, Any] = {"broker": bootstrap, "model": model}
    result |= await _publish_frames(settings, frames, frames_per_bar)
    with tempfile.TemporaryDirectory(prefix="sigstream-bench-") as tmp:
        proc, log_path = _start_worker(settings, model, Path(tmp))
        try:
            bars_expected = frames // frames_per_bar - 1  # the last bar stays open
            consumer = make_consumer(settings, settings.topics.market_bars)
            await consumer.start()
            try:
                records = await consume(consumer, count=bars_expected, idle_s=60.0, timeout_s=600.0)
            finally:
                await consumer.stop()
            if len(records) < 2:
                raise RuntimeError(f"worker produced {len(records)} bars:\n{log_path.read_text()[-3000:]}")
            span_s = (records[-1].timestamp - records[0].timestamp) / 1000.0
            frames_between = (len(records) - 1) * frames_per_bar
            result["bars"] = len(records)
            result["frames_per_s"] = frames_between / span_s if span_s > 0 else float("inf")
            result |= await _news_latency(settings, news_rate, news_seconds)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return result


async def _news_latency(settings: KafkaSettings, rate: float, seconds: float) -> dict[str, Any]:
    consumer = make_consumer(settings, settings.topics.signals, auto_offset_reset="latest")
    await consumer.start()
    await consumer.seek_to_end()
    await consumer.getmany(timeout_ms=500)  # make the position on the end real before producing
    producer = make_producer(settings)
    await producer.start()
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    all_received = asyncio.Event()

    async def collect() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for rs in batch.values():
                for r in rs:
                    ts_init = decode_signal(r.value)["ts_init"]  # InvalidInput on a non-v1 record
                    if ts_init in sent and ts_init not in received:
                        received[ts_init] = now
            if len(received) >= n:
                all_received.set()

    n = int(rate * seconds)
    collector = asyncio.create_task(collect())
    last_ts = 0
    start = time.perf_counter()
    try:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # ts_init comes back on the signal, so it identifies the item: keep it unique per item.
            ts = max(time.time_ns() // 1_000_000, last_ts + 1)
            last_ts = ts
            # A distinct text per item: the batcher caches repeated texts, which would hide the model.
            item = NewsItem(
                f"bench-{ts}",
                "bench",
                f"Bitcoin rallies as volume surges, update {i}",
                "",
                ("BTCUSDT",),
                (),
                "",
                ts,
                ts,
            )
            sent[ts] = time.perf_counter()
            await producer.send(settings.topics.news_raw, encode_event(item), key=item.id.encode(), partition=0)
        # Missing signals after 30 s are reported as news_signals < news_sent, not hidden.
        await asyncio.wait([asyncio.ensure_future(all_received.wait())], timeout=30)
        if collector.done() and (error := collector.exception()) is not None:
            raise error  # a signal that did not decode: say so, rather than "no news signal came back"
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    latencies = sorted((received[k] - sent[k]) * 1000.0 for k in received)
    if not latencies:
        raise RuntimeError("no news signal came back")
    return {
        "news_sent": n,
        "news_signals": len(latencies),
        "news_rate_per_s": rate,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "latency_max_ms": latencies[-1],
    }
