"""`sigstream run --record` against the Bybit-protocol and RSS test servers, then `sigstream replay` of the
recording: the replay prints the signals the live run printed (the one-runtime promise, live side)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.bybit.frames import kline_frame
from engine.events import Interval
from testkit.bybit_rest import synthetic_bars
from testkit.rss_http import FeedItem
from tests.support.data import REPO_ROOT
from tests.support.schema import validate_signal
from tests.support.servers import bybit_ws_server, rss_http_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

HEADLINES = (
    "Bitcoin surges as ETF inflows hit a record",
    "Bitcoin slides after exchange outage",
    "BTC holds steady ahead of the Fed decision",
    "Bitcoin miners report weak quarterly revenue",
    "Bitcoin rallies on strong institutional demand",
    "Regulators open an inquiry into bitcoin lenders",
    "Bitcoin rises to a two-week high",
    "Bitcoin falls as traders take profits",
)


def assert_same_signals(live: list[dict], replayed: list[dict]) -> None:
    assert len(live) == len(replayed), (len(live), len(replayed))
    for i, (a, b) in enumerate(zip(live, replayed, strict=True)):
        assert a["signal"] == b["signal"], (i, a, b)
        assert abs(a["confidence"] - b["confidence"]) <= 1e-9, (i, a, b)
        for label in ("SELL", "HOLD", "BUY"):
            assert abs(a["scores"][label] - b["scores"][label]) <= 1e-9, (i, a, b)
        same = ("id", "symbol", "ts_event", "ts_init", "cause", "num_sources", "actionable", "features")
        assert {k: a[k] for k in same} == {k: b[k] for k in same}, (i, a, b)


async def test_replay_of_a_live_recording_prints_the_live_signals(tmp_path: Path) -> None:
    bars_n = 40
    start = (int(datetime.now(UTC).timestamp() * 1000) // 60_000 - 3 * 60) * 60_000
    bars = synthetic_bars("BTCUSDT", Interval.M1, start, bars_n)
    frames = [kline_frame(bar, "BTCUSDT", Interval.M1) for bar in bars]
    recording = tmp_path / "live.jsonl.gz"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.2",
        "SIGSTREAM_BYBIT__TRADES": "false",
        "SIGSTREAM_BYBIT__TICKERS": "false",
        "SIGSTREAM_BYBIT__ORDERBOOK_DEPTH": "0",
    }
    live: list[dict] = []
    async with bybit_ws_server(frames, pace_s=0.15) as ws, rss_http_server([]) as feed:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sigstream.cli", "run", "--sources", "bybit,rss", "--symbols", "BTCUSDT",
            "--interval", "1m", "--feed", feed.url, "--bybit-url", ws.url, "--backfill", "0",
            "--record", str(recording),
            cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        published = 0
        try:
            async with asyncio.timeout(240):
                bar_signals = 0
                while bar_signals < bars_n:
                    line = await proc.stdout.readline()
                    assert line, (await proc.stderr.read()).decode()[-3000:]
                    record = orjson.loads(line)
                    live.append(record)
                    if record["cause"] != "bar":
                        continue
                    bar_signals += 1
                    if bar_signals % 4 == 1 and published < len(HEADLINES):
                        # News published just after this bar's close: it counts in the later bars' decisions.
                        moment = datetime.fromtimestamp((record["ts_event"] + 1_000) / 1000, UTC)
                        feed.add_items([FeedItem(HEADLINES[published], f"http://news.test/{published}", moment)])
                        published += 1
            await asyncio.sleep(1.0)  # the last news item is polled and scored
        finally:
            proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), 60)
    live += [orjson.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "recorded" in err.decode()
    news_driven = [s for s in live if s["cause"].startswith("news:")]
    assert len(news_driven) == published == len(HEADLINES)
    assert any(s["cause"] == "bar" and s["num_sources"] > 0 for s in live)  # news did count in bar decisions
    for record in live:
        validate_signal(record)

    replayed_path = tmp_path / "replayed.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sigstream.cli", "replay", str(recording), "--signals-out", str(replayed_path),
         "--no-progress"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    replayed = [orjson.loads(line) for line in replayed_path.read_bytes().splitlines()]
    assert_same_signals(live, replayed)
