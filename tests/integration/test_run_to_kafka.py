"""`sigstream run --kafka`: live Bybit frames and RSS news are published onto market.raw / news.raw, and
bad frames onto deadletter, for `sigstream worker` to process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.bybit.frames import kline_frame
from adapters.kafka.client import ensure_topics
from engine.events import Bar, Interval, NewsItem
from engine.serialization import decode_event
from testkit.bybit_rest import synthetic_bars
from testkit.rss_http import FeedItem
from tests.integration.streaming import REPO, env_for, read_topic, settings_for
from tests.support.servers import bybit_ws_server, rss_http_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_run_with_kafka_publishes_live_frames_news_and_dead_letters(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, unique)
    await ensure_topics(settings)
    bars = synthetic_bars("BTCUSDT", Interval.M1, 1_735_689_600_000, 20)
    frames = [kline_frame(bar, "BTCUSDT", Interval.M1) for bar in bars]
    frames.insert(5, {"topic": "kline.1.BTCUSDT", "ts": 1, "type": "snapshot", "data": [{"close": "x"}]})
    news = [FeedItem("Bitcoin rallies", "http://news.test/a", datetime.now(UTC))]
    async with bybit_ws_server(frames, pace_s=0.02) as ws, rss_http_server(news) as feed:
        env = env_for(settings, tmp_path / "faust") | {
            "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.2", "SIGSTREAM_BYBIT__TRADES": "false",
            "SIGSTREAM_BYBIT__TICKERS": "false", "SIGSTREAM_BYBIT__ORDERBOOK_DEPTH": "0",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sigstream.cli", "run", "--sources", "bybit,rss", "--symbols", "BTCUSDT",
            "--feed", feed.url, "--bybit-url", ws.url, "--kafka", kafka_bootstrap,
            cwd=REPO, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(ws.feed_done.wait(), 60)
            await asyncio.sleep(2)  # the last frames and a feed poll reach the publisher
        finally:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    market = [decode_event(r.value) for r in await read_topic(settings, settings.topics.market_raw, idle_s=2)
              if r.key]
    assert [b.start for b in market if isinstance(b, Bar)] == [b.start for b in bars]
    news_records = await read_topic(settings, settings.topics.news_raw, idle_s=2)
    # One copy per partition, so that every worker of a group gets it.
    assert sorted(r.partition for r in news_records) == list(range(settings.partitions))
    news_out = [decode_event(r.value) for r in news_records]
    assert {n.headline for n in news_out if isinstance(n, NewsItem)} == {"Bitcoin rallies"}
    dead = [decode_event(r.value) for r in await read_topic(settings, settings.topics.deadletter, idle_s=2)]
    assert len(dead) == 1 and "kline" in dead[0].reason
