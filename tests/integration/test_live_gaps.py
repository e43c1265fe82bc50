"""`sigstream run` heals the gaps websocket reconnects leave: the missed closed bars come over REST (ccxt).

The Bybit test server runs with venue semantics (``realtime_loss``): frames fall due on its own clock and
those due while no client listens are gone, as on Bybit, so only the REST backfill can bring them back.
The REST server holds a bar once its kline has been published (as a venue's REST API does), news is
published between bar times, and two drops and two stalls (each longer than the client's pong timeout)
force reconnects. Then: every bar gave exactly one bar signal, and the signals the run printed are those
of an in-process replay of the recording, and of a replay of the same bars (a kline CSV) and news.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from adapters.bybit.frames import kline_frame
from adapters.files.sink import RecordingWriter
from adapters.files.source import detect_source
from engine.events import Bar, Interval, NewsItem
from sigstream.modes.replay import ReplayOutputs, run_replay
from testkit.bybit_rest import BybitRestServer, synthetic_bars
from testkit.bybit_ws import BybitTestServer
from testkit.rss_http import FeedItem
from tests.support.data import REPO_ROOT
from tests.support.servers import bybit_rest_server, rss_http_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SYMBOL = "BTCUSDT"
BARS_N = 40
PACE_S = 0.1
DROPS_AT = (6, 24)  # right after these bars' klines are published
STALLS_AT = (9, 27)
STALL_S = 0.8  # > ping interval + pong timeout below: the client aborts and reconnects, mid-stall
NEWS_AT = {  # published 1 s after these bars closed, and fed before the next bar
    2: "Bitcoin surges as ETF inflows hit a record",
    20: "Bitcoin slides after exchange outage",
    36: "Bitcoin rallies on strong institutional demand",
    39: "Regulators open an inquiry into bitcoin lenders",
}
HEALED = re.compile(r"backfilled (\d+) bars of BTCUSDT after a reconnect")

ENV = {
    "HF_HUB_OFFLINE": "1",
    "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.2",
    "SIGSTREAM_BYBIT__TRADES": "false",
    "SIGSTREAM_BYBIT__TICKERS": "false",
    "SIGSTREAM_BYBIT__ORDERBOOK_DEPTH": "0",
    "SIGSTREAM_BYBIT__PING_INTERVAL_S": "0.2",
    "SIGSTREAM_BYBIT__PONG_TIMEOUT_S": "0.3",
    "SIGSTREAM_BYBIT__BACKOFF_INITIAL_S": "0.05",
    "SIGSTREAM_BYBIT__BACKOFF_MAX_S": "0.2",
    "SIGSTREAM_ENGINE__BATCHER__MAX_WAIT_MS": "100",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bars() -> list[Bar]:
    start = (int(datetime.now(UTC).timestamp() * 1000) // 60_000 - 3 * 60) * 60_000  # closed, 3 h ago
    return synthetic_bars(SYMBOL, Interval.M1, start, BARS_N)


def _venue(bars: list[Bar], rest: BybitRestServer | None, *, news: bool = True) -> BybitTestServer:
    """The websocket venue, keeping ``rest`` in step: a bar is on REST from the moment its kline is out.
    With ``news``, it pauses after each bar of ``NEWS_AT`` (the test plays it again)."""
    server = BybitTestServer([kline_frame(b, SYMBOL, Interval.M1) for b in bars], pace_s=PACE_S, realtime_loss=True)

    def published(index: int, frame: dict[str, Any]) -> None:
        if rest is not None:
            rest.add_bars([bars[index]])
        if news and index in NEWS_AT:
            server.pause()  # resumed once the run has taken this bar and the news published after it

    server.on_publish = published
    return server


class LiveRun:
    """``sigstream run`` as a subprocess, its stdout signals and stderr read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.signals: list[dict[str, Any]] = []
        self.stderr = ""
        self._changed = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, *args: str) -> LiveRun:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sigstream.cli", "run", *args,
            cwd=REPO_ROOT, env={**os.environ, **ENV}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.signals.append(orjson.loads(line))
            self._notify()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr += line.decode()
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self.proc.returncode is not None or all(r.done() for r in self._readers):
                raise AssertionError(f"sigstream run ended early:\n{self.stderr[-3000:]}")
            await self._changed.wait()

    def bar_signals(self) -> list[int]:
        return [s["ts_event"] for s in self.signals if s["cause"] == "bar"]

    def news_signals(self) -> int:
        return sum(s["cause"].startswith("news:") for s in self.signals)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)
        return returncode


async def _replay(paths: list[Path], out: Path, model: Any) -> list[dict[str, Any]]:
    """``sigstream replay`` of ``paths``, in process (its wiring, with the run's model and settings)."""
    from sigstream.settings import load_settings

    settings = load_settings()
    files = settings.files
    sources = [detect_source(p, symbol=SYMBOL, interval=Interval.M1, settings=files) for p in paths]
    engine_settings = settings.engine.model_copy(update={"interval": Interval.M1})
    await run_replay(sources, model, engine_settings, ReplayOutputs(signals=out), symbol=SYMBOL, progress=False)
    return _read_signals(out)


def _read_signals(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _assert_same(live: list[dict[str, Any]], replayed: list[dict[str, Any]], *, receive_times: bool) -> None:
    assert len(live) == len(replayed), (len(live), len(replayed))
    for i, (a, b) in enumerate(zip(live, replayed, strict=True)):
        same = ["symbol", "cause", "num_sources", "actionable", "features"]
        if receive_times:
            same += ["id", "ts_event", "ts_init"]
        elif a["cause"] == "bar":
            same += ["id", "ts_event"]  # a bar decides at its close; news at its receive time (so id differs)
        assert a["signal"] == b["signal"], (i, a, b)
        # Confidence weighs the evidence by its age at the decision. A news-caused signal decides when its item
        # is received: live, on this test's wall clock, hours after the synthetic bars; from files, at publish
        # time. So only there may it differ; every bar decision, and every signal of the recording, is exact.
        if receive_times or a["cause"] == "bar":
            assert abs(a["confidence"] - b["confidence"]) <= 1e-9, (i, a, b)
        for label in ("SELL", "HOLD", "BUY"):
            assert abs(a["scores"][label] - b["scores"][label]) <= 1e-9, (i, a, b)
        assert {k: a[k] for k in same} == {k: b[k] for k in same}, (i, a, b)


def _write_klines(bars: list[Bar], path: Path) -> None:
    lines = ["start,open,high,low,close,volume"]
    lines += [f"{b.start},{b.open!r},{b.high!r},{b.low!r},{b.close!r},{b.volume!r}" for b in bars]
    path.write_text("\n".join(lines) + "\n")


def _news_at_publish_time(recording: Path, out: Path) -> list[NewsItem]:
    """The recording's news, received when published (as a news file replays it), in a recording of its own."""
    news = [item for item in detect_source(recording).items() if isinstance(item, NewsItem)]
    with RecordingWriter(out) as writer:
        for item in news:
            writer.write_news(msgspec.structs.replace(item, ts_init=item.ts_event))
    return news


async def test_run_heals_the_gaps_of_two_drops_and_two_stalls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _bars()
    recording = tmp_path / "live.jsonl"
    async with bybit_rest_server() as rest, rss_http_server([]) as feed:
        async with _venue(bars, rest) as ws:
            began = time.monotonic()
            run = await LiveRun.start(
                "--sources", "bybit,rss", "--symbols", SYMBOL, "--interval", "1m", "--feed", feed.url,
                "--bybit-url", ws.url, "--rest-url", rest.url, "--backfill", "0", "--record", str(recording),
            )  # fmt: skip
            try:
                async with asyncio.timeout(240):
                    for k in range(BARS_N):
                        await ws.wait_until(lambda k=k: ws.frames_published > k)
                        if k in DROPS_AT:
                            await ws.drop()
                        if k in STALLS_AT:
                            ws.stall(STALL_S)
                        if k in NEWS_AT:
                            # The run took bar k (over the websocket, or backfilled): now the news, then bar k+1.
                            await run.wait(lambda k=k: bars[k].ts_event in run.bar_signals())
                            published = datetime.fromtimestamp((bars[k].ts_event + 1_000) / 1000, UTC)
                            fed = run.news_signals()
                            feed.add_items([FeedItem(NEWS_AT[k], f"http://news.test/{k}", published)])
                            await run.wait(lambda fed=fed: run.news_signals() > fed)
                            ws.play()
                    await run.wait(lambda: len(set(run.bar_signals())) == BARS_N)
                    streamed_s = time.monotonic() - began
                    await asyncio.sleep(0.5)  # a re-sent bar still in flight would show up as a second signal
            finally:
                returncode = await run.stop()
            lost = ws.frames_lost
            connections = ws.connections_total
    stderr = run.stderr
    assert returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr

    # The venue really lost bars (only the REST backfill can have brought them back) ...
    assert lost >= len(STALLS_AT), (lost, stderr[-3000:])
    assert connections >= 1 + len(DROPS_AT) + len(STALLS_AT)
    healed = [int(n) for n in HEALED.findall(stderr)]
    assert len(healed) >= len(STALLS_AT) and sum(healed) >= lost, (healed, lost, stderr[-3000:])
    summary = " ".join(stderr[stderr.rindex("stopped:"):].split())  # the console wraps long lines
    assert re.search(r"reconnects: backfilled \d+ missed bars in \d+ gaps, 0 backfills failed", summary), summary
    # ... and every bar gave exactly one bar signal, in bar order: none missing, none twice.
    assert run.bar_signals() == [b.ts_event for b in bars]
    assert run.news_signals() == len(NEWS_AT)
    assert any(s["cause"] == "bar" and s["num_sources"] > 0 for s in run.signals)  # news counted in bar decisions
    print(f"\nlost {lost} bars over {connections} connections; healed {sum(healed)} bars in {len(healed)} "
          f"backfills; {BARS_N} bars and {len(NEWS_AT)} news streamed in {streamed_s:.1f} s")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from adapters.model import load_sentiment_model
    from sigstream.settings import load_settings

    model = load_sentiment_model(load_settings().model)
    # The recording replays to the very signals the run printed, receive times included ...
    _assert_same(run.signals, await _replay([recording], tmp_path / "replayed.jsonl", model), receive_times=True)
    # ... and so do the same bars as a kline CSV with the same news, each received when it was published.
    klines = tmp_path / f"{SYMBOL}_1m.csv"
    _write_klines(bars, klines)
    news = tmp_path / "news.jsonl"
    assert len(_news_at_publish_time(recording, news)) == len(NEWS_AT)
    from_files = await _replay([klines, news], tmp_path / "from_files.jsonl", model)
    _assert_same(run.signals, from_files, receive_times=False)


async def test_a_gap_that_rest_cannot_heal_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    bars = _bars()[:20]
    async with _venue(bars, None, news=False) as ws:
        run = await LiveRun.start(
            "--sources", "bybit", "--symbols", SYMBOL, "--interval", "1m", "--bybit-url", ws.url,
            "--rest-url", f"http://127.0.0.1:{_free_port()}", "--backfill", "0",
        )  # fmt: skip
        try:
            async with asyncio.timeout(240):
                await ws.wait_until(lambda: ws.frames_published > 4)
                ws.stall(STALL_S)  # the frames due meanwhile are lost, and REST is down
                await run.wait(lambda: "gap backfill of BTCUSDT after a reconnect failed" in run.stderr)
                await ws.wait_until(lambda: ws.frames_published == len(bars))
                # The service went on: the bars after the gap still arrive.
                await run.wait(lambda: bars[-1].ts_event in run.bar_signals())
        finally:
            returncode = await run.stop()
        lost = ws.frames_lost
    stderr = run.stderr
    assert returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert lost >= 1
    # The gap stays (loudly: in the log and the summary); the bars around it arrived once each, in order.
    got = run.bar_signals()
    assert len(got) < len(bars) and got == sorted(set(got)), got
    assert set(got) <= {b.ts_event for b in bars}
    summary = " ".join(stderr[stderr.rindex("stopped:"):].split())  # the console wraps long lines
    assert re.search(r"reconnects: backfilled 0 missed bars in 0 gaps, [1-9]\d* backfills failed", summary), summary
