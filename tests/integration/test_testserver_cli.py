"""``sigstream testserver bybit|rss`` as other tools use it: a subprocess whose first stdout line is the URL,
that serves until SIGTERM and then exits 0, and that rejects bad input with exit 2 and one line."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect

from adapters.rss.config import RssSettings
from adapters.rss.source import RssNewsSource
from engine.clock import ManualClock
from tests.support.servers import CollectingDeadLetters

pytestmark = pytest.mark.integration

START = datetime(2025, 5, 30, 16, 40, tzinfo=UTC)
SIGSTREAM = Path(sys.executable).with_name("sigstream")  # the installed console script
REPO = Path(__file__).resolve().parents[2]


def command(*args: str) -> list[str]:
    if SIGSTREAM.exists():
        return [str(SIGSTREAM), "testserver", *args]
    return [sys.executable, "-m", "sigstream.cli", "testserver", *args]


@pytest.fixture
def kline_csv(tmp_path: Path) -> Path:
    path = tmp_path / "klines.csv"  # not SYMBOL_1m.csv: --symbol and --interval are given
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(30):
        ts = (START + timedelta(minutes=i)).isoformat(sep=" ")
        rows.append(f"{ts},{100 + i},{101 + i},{99 + i},{100.5 + i},{10 + i}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def news_csv(tmp_path: Path) -> Path:
    """Five rows in the cryptonews.csv layout, newest first as that file is."""
    path = tmp_path / "news.csv"
    rows = ["date;sentiment;source;subject;text;title;url"]
    for i in range(5):  # row i was published (4 - i) hours after the oldest
        published = datetime(2022, 7, 5, 4 - i, 30, tzinfo=UTC)
        rows.append(
            f"{published:%d-%m-%Y %H:%M};{{'class': 'neutral'}};CryptoNews;bitcoin;Body {i};"
            f"Bitcoin headline {i};https://news.example/{i}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *args: str) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """Start the command, read the URL from its first stdout line; on exit SIGTERM it and expect exit 0."""
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(*command(*args), stdout=asyncio.subprocess.PIPE, stderr=stderr)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, f"no URL line; stderr: {stderr_path.read_text()}"
            yield line.decode().strip(), proc
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 30)
            assert rc == 0, f"exit {rc}; stderr: {stderr_path.read_text()}"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_bybit_serves_the_kline_csv_to_a_subscriber_and_stops_on_sigterm(
    tmp_path: Path, kline_csv: Path
) -> None:
    args = ("bybit", "--port", "0", "--klines", str(kline_csv), "--symbol", "BTCUSDT", "--interval", "1m")
    async with serving(tmp_path, *args, "--pace-ms", "5") as (url, _):
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/v5/public/linear", url), url
        assert not url.endswith(":0/v5/public/linear")
        async with connect(url) as ws:
            await ws.send('{"req_id": "1", "op": "subscribe", "args": ["kline.1.BTCUSDT"]}')
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (ack["success"], ack["op"], ack["req_id"]) == (True, "subscribe", "1")
            frames = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(30)]
    assert {f["topic"] for f in frames} == {"kline.1.BTCUSDT"}
    starts = [f["data"][0]["start"] for f in frames]
    first = int(START.timestamp() * 1000)
    assert starts == [first + i * 60_000 for i in range(30)]
    assert all(f["data"][0]["confirm"] is True for f in frames)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_bybit_exits_0_on_a_signal_with_a_client_connected(
    tmp_path: Path, kline_csv: Path, signum: signal.Signals
) -> None:
    args = ("bybit", "--port", "0", "--klines", str(kline_csv), "--symbol", "BTCUSDT", "--interval", "1m")
    async with serving(tmp_path, *args) as (url, proc):
        async with connect(url) as ws:
            await ws.send('{"op": "subscribe", "args": ["kline.1.BTCUSDT"]}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["success"] is True
            proc.send_signal(signum)
            assert await asyncio.wait_for(proc.wait(), 30) == 0


async def feed_titles(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(url) as response:
        assert response.status == 200
        body = await response.text()
    return re.findall(r"<item><title>([^<]*)</title>", body)


async def test_rss_feed_grows_by_one_item_per_pace_oldest_first(tmp_path: Path, news_csv: Path) -> None:
    async with serving(tmp_path, "rss", "--port", "0", "--news", str(news_csv), "--pace-ms", "400") as (url, _):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/feed\.xml", url), url
        async with aiohttp.ClientSession() as session:
            first = await feed_titles(session, url)
            await asyncio.sleep(1.0)
            second = await feed_titles(session, url)
            # The URL is a feed sigstream's own RSS source reads (what `run --sources rss --feed URL` does).
            source = RssNewsSource(RssSettings(feeds=(url,)), CollectingDeadLetters(), clock=ManualClock(0))
            try:
                news = await source.poll_once()
            finally:
                await source.close()
    assert 1 <= len(first) < len(second) <= 5
    # Published oldest first (the CSV's last row is the oldest), listed newest first like a real feed.
    oldest_first = [f"Bitcoin headline {i}" for i in (4, 3, 2, 1, 0)]
    assert second == oldest_first[: len(second)][::-1]
    assert first == second[-len(first):]
    assert [n.headline for n in news] == oldest_first[: len(news)]
    assert len(news) >= len(second)
    assert news[0].url == "https://news.example/4"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("bybit", "--port", "0"), "exactly one of --recording"),
        (("bybit", "--port", "0", "--recording", "REC", "--klines", "CSV"), "exactly one of --recording"),
        (("bybit", "--port", "0", "--klines", "MISSING"), "no such file"),
        (("bybit", "--port", "0", "--klines", "CSV", "--symbol", "BTCUSDT", "--interval", "7m"), "--interval"),
        (("rss", "--port", "0", "--news", "MISSING"), "no such file"),
        (("rss", "--port", "0"), "--news"),
    ],
)
async def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, kline_csv: Path, args: tuple[str, ...], reason: str
) -> None:
    recording = tmp_path / "rec.jsonl"
    recording.write_text("")
    paths = {"CSV": str(kline_csv), "REC": str(recording), "MISSING": str(tmp_path / "missing.csv")}
    proc = await asyncio.create_subprocess_exec(
        *command(*(paths.get(a, a) for a in args)), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert stdout == b""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and reason in lines[0]


def test_production_code_never_imports_the_test_kit() -> None:
    offenders = []
    for package in ("engine", "adapters"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                )
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "testkit"]
    assert offenders == []
