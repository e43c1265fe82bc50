"""`sigstream run` end to end: real Bybit-protocol websocket, RSS over HTTP, ccxt backfill over REST."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest

from adapters.bybit.frames import kline_frame
from engine.events import Interval
from testkit.bybit_rest import synthetic_bars
from testkit.rss_http import FeedItem
from tests.support.data import REPO_ROOT
from tests.support.servers import bybit_rest_server, bybit_ws_server, eventually, rss_http_server

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_run_streams_signals_and_flushes_on_sigterm() -> None:
    start = 1_735_689_600_000
    history = synthetic_bars("BTCUSDT", Interval.M1, start, 60)
    live = synthetic_bars("BTCUSDT", Interval.M1, start + 60 * 60_000, 30)
    frames = [kline_frame(bar, "BTCUSDT", Interval.M1) for bar in live]
    now = datetime.now(UTC)
    news = [
        FeedItem(f"Bitcoin surges to a record as ETF demand climbs {i}", f"http://news.test/{i}", now) for i in range(3)
    ]
    metrics_port = _free_port()
    async with bybit_ws_server(frames, pace_s=0.05) as ws, rss_http_server([]) as feed, bybit_rest_server() as rest:
        rest.add_bars(history)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.2",
            "SIGSTREAM_BYBIT__TRADES": "false",
            "SIGSTREAM_BYBIT__TICKERS": "false",
            "SIGSTREAM_BYBIT__ORDERBOOK_DEPTH": "0",
            # a batch that never fills and never times out: only the shutdown flush can score it
            "SIGSTREAM_ENGINE__BATCHER__MAX_WAIT_MS": "60000",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sigstream.cli",
            "run",
            "--sources",
            "bybit,rss",
            "--symbols",
            "BTCUSDT",
            "--feed",
            feed.url,
            "--bybit-url",
            ws.url,
            "--rest-url",
            rest.url,
            "--backfill",
            "50",
            "--metrics-port",
            str(metrics_port),
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        lines: list[dict] = []
        try:
            async with asyncio.timeout(120):
                while len(lines) < len(live):
                    line = await proc.stdout.readline()
                    assert line, (await proc.stderr.read()).decode()[-3000:]
                    lines.append(orjson.loads(line))
            # The news comes after the last bar (a bar would score it first): only the shutdown flush can.
            feed.add_items(news)
            # the feed is polled every 0.2 s: by now the three items wait in the batcher
            await asyncio.sleep(3)
            assert all(s["num_sources"] == 0 for s in lines)
            metrics = await asyncio.to_thread(_scrape, metrics_port)
            assert "sigstream_engine_bars_total" in metrics
            assert "sigstream_service_news_total 3.0" in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
        rest_out, err = await asyncio.wait_for(proc.communicate(), 60)
        lines += [orjson.loads(line) for line in rest_out.splitlines()]
    assert proc.returncode == 0, err.decode()[-3000:]
    stderr = err.decode()
    assert "backfilled 50 1m bars of BTCUSDT" in stderr
    assert "stopped:" in stderr
    # warm features: the first live bar already has its 20-bar windows filled from the backfill
    first_bar_signal = next(s for s in lines if s["num_sources"] == 0 or s["features"])
    assert first_bar_signal["features"]["volatility_20"] is not None
    news_signals = [s for s in lines if s["num_sources"] > 0]
    assert len(news_signals) == 3  # one per news item, all published by the shutdown flush
    assert news_signals[-1]["num_sources"] == 3
    assert {s["symbol"] for s in lines} == {"BTCUSDT"}


async def test_a_failed_source_still_lets_pending_news_flush_and_exits_non_zero() -> None:
    # Bybit gives up at once (nothing listens on the port); the RSS items wait in a batch that only the
    # shutdown flush scores. The failed source must neither crash the shutdown nor lose those items.
    now = datetime.now(UTC)
    news = [FeedItem(f"Bitcoin rallies as inflows climb {i}", f"http://news.test/f{i}", now) for i in range(3)]
    async with rss_http_server(news) as feed:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.2",
            "SIGSTREAM_BYBIT__MAX_RECONNECTS": "1",
            "SIGSTREAM_BYBIT__BACKOFF_INITIAL_S": "0.05",
            "SIGSTREAM_ENGINE__BATCHER__MAX_WAIT_MS": "60000",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sigstream.cli", "run", "--sources", "bybit,rss", "--feed", feed.url,
            "--bybit-url", f"ws://127.0.0.1:{_free_port()}", "--backfill", "0",
            cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        seen = b""
        try:
            async with asyncio.timeout(120):
                while b"source stopped" not in seen:
                    seen += await proc.stderr.readline()
            await eventually(lambda: feed.log.total >= 2, timeout=60)  # fetched: the items wait in the batch
        finally:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = (seen + err).decode()
    assert proc.returncode == 1, stderr[-3000:]
    assert "fatal: source(s) failed: market: bybit websocket: gave up" in stderr
    assert "Traceback" not in stderr
    news_signals = [s for s in map(orjson.loads, out.splitlines()) if s["num_sources"] > 0]
    assert len(news_signals) == 3
