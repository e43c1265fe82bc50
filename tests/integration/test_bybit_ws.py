"""BybitTickSource against the real local Bybit v5 websocket test server (no mocks)."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from adapters.bybit.frames import klines_to_frames, orderbook_frames, trade_frame
from adapters.bybit.parsing import parse_frame
from adapters.bybit.source import BybitTickSource
from adapters.system.clock import WallClock
from engine.events import Bar, BookTop, Event, Interval, Trade
from testkit.bybit_ws import BybitTestServer, FeedEntry, load_kline_csv, load_recording
from tests.support.servers import CollectingDeadLetters, bybit_ws_server, eventually, fast_bybit_settings

pytestmark = pytest.mark.integration

START = 1_748_623_200_000  # 2025-05-30 16:40 UTC


def kline_rows(n: int, start: int = START) -> list[dict[str, str]]:
    return [
        {
            "start": str(start + i * 60_000),
            "open": f"{100 + i:.1f}",
            "high": f"{101 + i:.1f}",
            "low": f"{99 + i:.1f}",
            "close": f"{100.5 + i:.1f}",
            "volume": f"{10 + i}.5",
        }
        for i in range(n)
    ]


def expected_bars(frames: list[dict]) -> list[tuple]:
    return [(b.start, b.close, b.volume, b.ts_event) for f in frames for b in parse_frame(f, 0)]


def bar_key(bar: Bar) -> tuple:
    return (bar.start, bar.close, bar.volume, bar.ts_event)


@asynccontextmanager
async def running(source: BybitTickSource) -> AsyncIterator[list[Event]]:
    """Consume the source in the background; yield the list the events land in."""
    events: list[Event] = []

    async def consume() -> None:
        async for event in source.events():
            events.append(event)

    task = asyncio.create_task(consume())
    try:
        yield events
    finally:
        await source.close()
        await asyncio.wait_for(task, 5)


async def test_server_answers_subscribe_and_ping_exactly_like_bybit() -> None:
    async with bybit_ws_server() as server, connect(server.url) as ws:
        await ws.send('{"req_id": "10001", "op": "subscribe", "args": ["kline.1.BTCUSDT", "publicTrade.BTCUSDT"]}')
        ack = orjson.loads(await ws.recv())
        assert list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
        assert ack["success"] is True
        assert ack["ret_msg"] == "subscribe"
        assert ack["req_id"] == "10001"
        assert ack["op"] == "subscribe"
        await ws.send('{"req_id": "7", "op": "ping"}')
        pong = orjson.loads(await ws.recv())
        assert pong == {"success": True, "ret_msg": "pong", "conn_id": ack["conn_id"], "req_id": "7", "op": "ping"}
        await ws.send('{"op": "subscribe", "args": ["kline.7.BTCUSDT"]}')
        rejected = orjson.loads(await ws.recv())
        assert rejected["success"] is False
        assert rejected["ret_msg"] == "error:handler not found,topic:kline.7.BTCUSDT"
        await ws.send('{"op": "subscribe", "args": ["kline.1.BTCUSDT"]}')
        assert orjson.loads(await ws.recv())["ret_msg"] == "error:already subscribed,topic:kline.1.BTCUSDT"
        assert server.subscribed_topics == {"kline.1.BTCUSDT", "publicTrade.BTCUSDT"}
        await ws.send('{"op": "control", "args": ["explode"]}')
        assert orjson.loads(await ws.recv())["ret_msg"] == "error:unknown control command 'explode'"


async def test_server_sends_only_subscribed_topics() -> None:
    klines = klines_to_frames(kline_rows(3), "BTCUSDT", Interval.M1)
    eth = klines_to_frames(kline_rows(3), "ETHUSDT", Interval.M1)
    trades = [trade_frame("BTCUSDT", [(START + 5, "Buy", 100.0, 1.0, "t1")])]
    async with bybit_ws_server([*eth, *trades, *klines]) as server, connect(server.url) as ws:
        await ws.send('{"op": "subscribe", "args": ["kline.1.BTCUSDT"]}')
        assert orjson.loads(await ws.recv())["success"] is True
        received = [orjson.loads(await ws.recv()) for _ in range(3)]
        assert received == klines
        async with asyncio.timeout(5):
            await server.wait_until(lambda: server.feed_done.is_set())
        assert server.frames_skipped == 4


async def test_source_subscribes_and_turns_confirmed_klines_into_bars() -> None:
    frames = klines_to_frames(kline_rows(30), "BTCUSDT", Interval.M1)
    dead = CollectingDeadLetters()
    async with bybit_ws_server(frames) as server:
        source = BybitTickSource(fast_bybit_settings(server.url), dead, clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 30)
        assert server.subscribe_requests == [["kline.1.BTCUSDT"]]
    assert all(isinstance(e, Bar) for e in events)
    assert [bar_key(e) for e in events] == expected_bars(frames)
    assert events[0].ts_event == START + 60_000
    assert dead.count == 0


async def test_source_pings_every_interval_and_sees_pongs() -> None:
    async with bybit_ws_server() as server:
        settings = fast_bybit_settings(server.url, ping_interval_s=0.05)
        source = BybitTickSource(settings, CollectingDeadLetters(), clock=WallClock())
        async with running(source):
            await eventually(lambda: source.client.stats.pongs >= 3)
        assert server.pings >= 3
        assert {"op": "ping"}.items() <= server.client_messages[-1].items()
        assert source.client.stats.pong_timeouts == 0


async def test_source_reconnects_after_drop_and_resubscribes_without_losing_bars() -> None:
    frames = klines_to_frames(kline_rows(40), "BTCUSDT", Interval.M1)
    async with bybit_ws_server(frames[:15]) as server:
        source = BybitTickSource(
            fast_bybit_settings(server.url, trades=True, tickers=True), CollectingDeadLetters(), clock=WallClock(),
        )
        async with running(source) as events:
            await eventually(lambda: len(events) == 15)
            await server.drop()
            server.add_frames(frames[15:])
            await eventually(lambda: len(events) == 40)
        assert server.connections_total == 2
        topics = ["publicTrade.BTCUSDT", "kline.1.BTCUSDT", "tickers.BTCUSDT"]
        assert server.subscribe_requests == [topics, topics]
    assert source.client.stats.reconnects == 1
    assert [bar_key(e) for e in events] == expected_bars(frames)


async def test_control_message_drops_connection_and_source_comes_back() -> None:
    frames = klines_to_frames(kline_rows(10), "BTCUSDT", Interval.M1)
    async with bybit_ws_server(frames[:5]) as server:
        source = BybitTickSource(fast_bybit_settings(server.url), CollectingDeadLetters(), clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 5)
            await source.client.send_raw({"op": "control", "args": ["drop"]})
            await eventually(lambda: server.connections_total == 2 and server.subscribed_topics != set())
            server.add_frames(frames[5:])
            await eventually(lambda: len(events) == 10)
    assert [bar_key(e) for e in events] == expected_bars(frames)


async def test_stalled_server_misses_pong_and_source_reconnects() -> None:
    frames = klines_to_frames(kline_rows(6), "BTCUSDT", Interval.M1)
    async with bybit_ws_server(frames[:3]) as server:
        settings = fast_bybit_settings(server.url, ping_interval_s=0.1, pong_timeout_s=0.2)
        source = BybitTickSource(settings, CollectingDeadLetters(), clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 3)
            server.stall()
            await eventually(lambda: source.client.stats.pong_timeouts >= 1)
            server.resume()
            server.add_frames(frames[3:])
            await eventually(lambda: len(events) == 6)
        assert server.connections_total >= 2
    assert [bar_key(e) for e in events] == expected_bars(frames)


async def test_malformed_json_is_dead_lettered_and_stream_continues() -> None:
    frames = klines_to_frames(kline_rows(8), "BTCUSDT", Interval.M1)
    dead = CollectingDeadLetters()
    async with bybit_ws_server(frames[:4]) as server:
        source = BybitTickSource(fast_bybit_settings(server.url), dead, clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 4)
            await server.control("malformed")
            server.add_frames(frames[4:])
            await eventually(lambda: len(events) == 8)
    assert [bar_key(e) for e in events] == expected_bars(frames)
    [record] = dead.records
    assert record.reason.startswith("malformed JSON")
    assert record.source == "bybit"
    assert record.raw.startswith('{"topic": "kline.1.BTCUSDT"')
    assert source.stats.dead_letters == 1


async def test_bad_frame_content_is_dead_lettered_with_reason() -> None:
    good = trade_frame("BTCUSDT", [(START + 1, "Buy", 100.0, 1.0, "a")])
    bad = trade_frame("BTCUSDT", [(START + 2, "Sell", 100.0, 1.0, "b")])
    bad["data"][0]["p"] = "one hundred"
    dead = CollectingDeadLetters()
    async with bybit_ws_server([good, bad, good]) as server:
        source = BybitTickSource(fast_bybit_settings(server.url, klines=False, trades=True), dead, clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 2 and dead.count == 1)
    assert all(isinstance(e, Trade) for e in events)
    assert dead.reasons() == ["publicTrade.BTCUSDT: non-numeric price 'one hundred'"]


async def test_orderbook_gap_triggers_resubscribe_and_book_resyncs() -> None:
    book = orderbook_frames("BTCUSDT", depth=50, deltas=30, start_u=1000, seed=7)
    topic = "orderbook.50.BTCUSDT"
    dead = CollectingDeadLetters()
    async with bybit_ws_server(book[:11]) as server:
        settings = fast_bybit_settings(server.url, klines=False, orderbook_depth=50)
        source = BybitTickSource(settings, dead, clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 11)
            server.skip_sequence(topic)
            server.add_frames(book[11:])
            await eventually(lambda: server.feed_done.is_set() and events[-1].update_id == 1030)
        unsubscribes = [m for m in server.client_messages if m.get("op") == "unsubscribe"]
        assert unsubscribes and unsubscribes[0]["args"] == [topic]
        final_top = server.book_top(topic)
    assert server.deltas_swallowed == 1
    assert source.stats.resyncs == 1
    assert "expected u=1011 got u=1012" in dead.reasons()[0]
    last = events[-1]
    assert isinstance(last, BookTop)
    assert (last.best_bid, last.best_ask) == final_top
    # Book tops before the gap are the exact incremental book; none was emitted from a gapped delta.
    assert [e.update_id for e in events[:11]] == list(range(1000, 1011))


async def test_recording_replay_skips_other_sources(tmp_path: Path) -> None:
    frames = klines_to_frames(kline_rows(3), "BTCUSDT", Interval.M1)
    path = tmp_path / "rec.jsonl.gz"
    lines = [{"ts_init": f["ts"] + 5, "source": "bybit", "data": f} for f in frames]
    lines.insert(1, {"ts_init": 1, "source": "news", "data": {"id": "n1", "title": "Bitcoin up"}})
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(line) for line in lines) + b"\n"))
    entries = load_recording(path)
    assert [e.frame for e in entries] == frames
    assert entries[0].ts_init == frames[0]["ts"] + 5
    async with bybit_ws_server(entries, speed=1000.0) as server:
        source = BybitTickSource(fast_bybit_settings(server.url), CollectingDeadLetters(), clock=WallClock())
        async with running(source) as events:
            await eventually(lambda: len(events) == 3)
    assert [bar_key(e) for e in events] == expected_bars(frames)


def test_kline_csv_loader_infers_symbol_and_interval(tmp_path: Path) -> None:
    path = tmp_path / "ADAUSDT_5m.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-05-30 16:40:00+00:00,0.6901,0.6912,0.6894,0.6898,216241.0\n"
        "2025-05-30 16:45:00+00:00,0.6898,0.6916,0.6886,0.6913,254670.0\n"
    )
    entries = load_kline_csv(path)
    assert [e.frame["topic"] for e in entries] == ["kline.5.ADAUSDT"] * 2
    assert entries[1].ts_init == START + 600_000


def test_testserver_cli_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "testserver", "bybit", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--recording" in result.stdout
    assert "--klines" in result.stdout
    assert "skip_seq" in result.stdout


def test_testserver_class_is_importable_without_a_running_loop() -> None:
    server = BybitTestServer([FeedEntry({"topic": "kline.1.BTCUSDT"})])
    assert server.url.startswith("ws://127.0.0.1:")


async def test_a_server_that_acks_and_drops_is_backed_off_until_max_reconnects() -> None:
    # A subscribe ack is not market data: a server that acks and closes must not reset the backoff,
    # or the client reconnects at full speed forever (Bybit caps connections per 5 minutes).
    from adapters.bybit.client import BybitWsClient
    from engine.errors import TransientError

    async with bybit_ws_server() as server:
        client = BybitWsClient(fast_bybit_settings(server.url, max_reconnects=3), clock=WallClock())
        await client.subscribe(["kline.1.BTCUSDT"])

        async def drop_after_each_ack() -> None:
            acked = 0
            while True:
                await eventually(lambda n=acked: len(server.subscribe_requests) > n, timeout=30)
                acked = len(server.subscribe_requests)
                await eventually(lambda n=acked: client.stats.messages - client.stats.pongs >= n)  # the ack arrived
                await server.drop()

        async def ignore(message: str | bytes, ts_init: int) -> None:
            return None

        dropper = asyncio.create_task(drop_after_each_ack())
        try:
            with pytest.raises(TransientError, match="gave up after 3"):
                await asyncio.wait_for(client.run(ignore), 30)
        finally:
            dropper.cancel()
    assert client.stats.data_messages == 0
    assert server.connections_total == 4
