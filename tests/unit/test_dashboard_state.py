"""The dashboard's state and HTTP routes, without a browser (tests/integration/test_dashboard_browser.py has one)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from aiohttp import ClientSession

from adapters.web.config import DashboardSettings
from adapters.web.server import DashboardServer
from adapters.web.state import DashboardState
from engine.events import Features, Interval, NewsItem, SentimentScore
from tests.support.data import REPO_ROOT


def features(symbol: str, start: int, close: float) -> Features:
    return Features(symbol, Interval.M1, start, close, None, None, None, None, None, 55.0, float("nan"), None, None,
                    None, start + 60_000, start + 60_005)


def signal(symbol: str, ts: int) -> dict:
    return {"v": 1, "id": f"{symbol}:{ts}:bar", "symbol": symbol, "ts_event": ts, "ts_init": ts, "cause": "bar",
            "signal": "HOLD", "confidence": 1.0, "scores": {"SELL": 0.0, "HOLD": 1.0, "BUY": 0.0}, "num_sources": 0,
            "actionable": True, "features": None}


def score(news_id: str) -> SentimentScore:
    return SentimentScore(news_id, ("BTCUSDT",), 0.1, 0.2, 0.7, "bullish", 0.7, 5, 6)


def test_state_is_bounded_and_shows_each_thing_once() -> None:
    state = DashboardState(DashboardSettings(bars=10, signals=3, news=2))
    told: list = []
    state.listeners.append(told.append)
    for i in range(15):
        state.on_features(features("BTCUSDT", i * 60_000, 100.0 + i))
    state.on_features(features("BTCUSDT", 14 * 60_000, 99.0))  # the same bar again: replaced
    for i in range(5):
        state.on_signal(signal("BTCUSDT", i))
    state.on_signal(signal("BTCUSDT", 4))  # a re-sent copy (same id)
    snap = state.snapshot()["symbols"]["BTCUSDT"]
    assert [b["start"] for b in snap["bars"]] == [i * 60_000 for i in range(5, 15)]
    assert snap["bars"][-1]["close"] == 99.0
    assert snap["features"]["features"]["rsi_14"] == 55.0 and snap["features"]["features"]["macd"] is None  # NaN
    assert [s["ts_event"] for s in snap["signals"]] == [2, 3, 4]
    assert sum(1 for kind, _ in told if kind == "signal") == 5


def test_a_headline_joins_its_score_whichever_comes_first() -> None:
    state = DashboardState()
    state.on_news(NewsItem("a", "t", "Headline A", "", (), (), "http://a", 1, 2))
    state.on_score(score("a"))
    state.on_score(score("b"))  # its item comes later
    state.on_news(NewsItem("b", "t", "Headline B", "", (), (), "", 1, 2))
    state.on_score(score("b"))  # a copy of the score: shown once
    news = state.snapshot()["news"]
    assert [(n["id"], n["headline"], n["url"]) for n in news] == [("a", "Headline A", "http://a"),
                                                                   ("b", "Headline B", None)]
    assert news[0]["scores"] == {"bearish": 0.1, "neutral": 0.2, "bullish": 0.7}


async def test_routes_serve_the_page_the_state_and_a_stream_that_starts_with_a_snapshot() -> None:
    state = DashboardState()
    state.on_signal(signal("ETHUSDT", 1))
    server = await DashboardServer(DashboardSettings(port=0), state).start()
    try:
        async with ClientSession() as http:
            async with http.get(server.url) as page:
                assert page.status == 200 and "/static/dashboard.js" in await page.text()
            async with http.get(server.url + "static/dashboard.js") as script:
                assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
            for bad in ("static/..%2Fserver.py", "static/.hidden.js", "static/nope.js", "static/server.py"):
                async with http.get(server.url + bad) as response:
                    assert response.status == 404, bad
            async with http.get(server.url + "state") as response:
                assert (await response.json())["symbols"]["ETHUSDT"]["signals"][0]["id"] == "ETHUSDT:1:bar"
            async with http.get(server.url + "events") as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                first = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
                assert first.startswith(b"event: snapshot\ndata: ")
                state.on_signal(signal("ETHUSDT", 2))
                update = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
                assert update.startswith(b"event: signal\ndata: ") and b'"ETHUSDT:2:bar"' in update
    finally:
        await server.close()


async def test_a_page_that_falls_behind_is_disconnected_to_start_again() -> None:
    state = DashboardState()
    server = await DashboardServer(DashboardSettings(port=0, client_queue=10), state).start()
    try:
        async with ClientSession() as http, http.get(server.url + "events") as stream:
            await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)  # the snapshot
            for i in range(50):  # more than the page's buffer, with no chance to send any
                state.on_signal(signal("ETHUSDT", i))
            body = await asyncio.wait_for(stream.content.read(), 5)  # the server ends the stream
            assert body.count(b"event: signal") <= 10
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dashboard", "--port", "70000"], "--port"),
        (["dashboard", "--port", "{busy}"], "dashboard cannot listen on 127.0.0.1:{busy}"),
        (["run", "--kafka", "127.0.0.1:1", "--dashboard-port", "8080"], "--dashboard-port shows the in-process"),
    ],
)
def test_dashboard_flag_errors_are_one_line_with_exit_status_2(args: list[str], expected: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        proc = subprocess.run(
            [sys.executable, "-m", "sigstream.cli", *[a.format(busy=port) for a in args]], cwd=REPO_ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120, check=False,
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected.format(busy=port) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
