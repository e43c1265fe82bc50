"""`sigstream run` stops as a user expects: Ctrl-C flushes and exits 130, a source that cannot connect gives up
after its configured attempts (exit 1, with why), and a local --bybit-url makes no REST call to the real exchange."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import orjson
import pytest

from adapters.bybit.frames import kline_frame
from engine.events import Interval
from testkit.bybit_rest import synthetic_bars
from tests.support.data import REPO_ROOT
from tests.support.servers import bybit_ws_server

pytestmark = pytest.mark.integration

LEXICON = "tests.support.lexicon_model:LexiconSentimentModel"
QUIET_BYBIT = {"SIGSTREAM_BYBIT__TRADES": "false", "SIGSTREAM_BYBIT__TICKERS": "false",
               "SIGSTREAM_BYBIT__ORDERBOOK_DEPTH": "0"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _run(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sigstream.cli", "run", "--model", LEXICON, *args, cwd=REPO_ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_ctrl_c_flushes_and_exits_130_without_touching_the_real_exchange(tmp_path: Path) -> None:
    bars = synthetic_bars("BTCUSDT", Interval.M1, 1_735_689_600_000, 200)
    frames = [kline_frame(bar, "BTCUSDT", Interval.M1) for bar in bars]
    out = tmp_path / "signals.jsonl"
    async with bybit_ws_server(frames, pace_s=0.05) as ws:
        proc = await _run("--sources", "bybit", "--symbols", "BTCUSDT", "--bybit-url", ws.url,
                          "--signals-out", str(out), env=QUIET_BYBIT)
        assert proc.stdout is not None and proc.stderr is not None
        printed: list[bytes] = []
        try:
            async with asyncio.timeout(120):
                while len(printed) < 5:
                    line = await proc.stdout.readline()
                    assert line, (await proc.stderr.read()).decode()[-3000:]
                    printed.append(line)
        finally:
            proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == 130, stderr[-3000:]
    printed += rest.splitlines(keepends=True)
    assert "stopped:" in stderr and "Traceback" not in stderr
    # Flushed before exiting: the file holds every signal printed, in the same order.
    assert [orjson.loads(x) for x in out.read_bytes().splitlines()] == [orjson.loads(x) for x in printed]
    # A local websocket and no --rest-url: no warm-up and no gap healing from api.bybit.com.
    assert "no REST backfill and no gap healing" in stderr
    assert "backfill" not in stderr.replace("no REST backfill", "")


@pytest.mark.parametrize("source", ["bybit", "rss"])
async def test_an_unreachable_source_gives_up_after_its_attempts(source: str) -> None:
    port = _free_port()
    if source == "bybit":
        args = ["--sources", "bybit", "--bybit-url", f"ws://127.0.0.1:{port}"]
        env = {**QUIET_BYBIT, "SIGSTREAM_BYBIT__MAX_CONNECT_ATTEMPTS": "3",
               "SIGSTREAM_BYBIT__BACKOFF_INITIAL_S": "0.05"}  # fmt: skip
        reason = f"market: bybit websocket: gave up after 3 connection attempts to ws://127.0.0.1:{port}"
    else:
        args = ["--sources", "rss", "--feed", f"http://127.0.0.1:{port}/rss"]
        env = {"SIGSTREAM_RSS__MAX_CONNECT_ATTEMPTS": "2", "SIGSTREAM_RSS__POLL_INTERVAL_S": "0.1",
               "SIGSTREAM_RSS__ATTEMPTS": "1"}  # fmt: skip
        reason = "news: rss: gave up after 2 polls in which no feed could be reached"
    proc = await _run(*args, env=env)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    stderr = err.decode()
    assert proc.returncode == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"fatal: source(s) failed: {reason}")
    assert "Traceback" not in stderr


async def test_the_worker_keeps_json_log_lines_under_faust(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    from adapters.kafka.client import ensure_topics
    from tests.integration.streaming import WorkerProcess, settings_for

    settings = settings_for(kafka_bootstrap, unique, partitions=1)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker", args=("--log-format", "json"))
    worker.start()
    try:
        async with asyncio.timeout(120):
            while "Ready" not in worker.log():  # faust logs "Ready" once it has its partitions
                worker.assert_alive()
                await asyncio.sleep(0.5)
    finally:
        worker.stop()
    assert worker.log_path is not None
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object, faust's own included
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"].endswith("Ready") for r in records)
    assert any(r["logger"].startswith("faust") for r in records)
