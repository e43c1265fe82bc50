"""The Bybit test server's own fault injection must not break its guarantees.

* A ``resume`` sent over the socket ends a stall and is answered (it used to deadlock: its answer
  waited on the very stall it was meant to end).
* Every replayed frame reaches a subscribed client exactly once across drops: a frame that reached no
  subscriber because it dropped goes to the next one (it used to be skipped when the drop landed
  between the pump's "anyone subscribed?" check and its send).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.bybit.frames import klines_to_frames, orderbook_frames
from engine.events import Interval
from testkit.bybit_ws import BybitTestServer
from tests.support.servers import bybit_ws_server, eventually

pytestmark = pytest.mark.integration

START = 1_748_623_200_000
TOPIC = "kline.1.BTCUSDT"


def kline_frames(n: int) -> list[dict[str, Any]]:
    rows = [
        {"start": str(START + i * 60_000), "open": "1.0", "high": "2.0", "low": "0.5", "close": f"{1 + i}.5",
         "volume": "3.0"}
        for i in range(n)
    ]
    return klines_to_frames(rows, "BTCUSDT", Interval.M1)


async def recv_json(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:  # noqa: ASYNC109 - a deadline per message reads best here
    async with asyncio.timeout(timeout):
        message = orjson.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def subscribe(ws: ClientConnection, *topics: str) -> None:
    await ws.send(orjson.dumps({"op": "subscribe", "args": list(topics)}).decode())
    ack = await recv_json(ws)
    assert ack["op"] == "subscribe" and ack["success"] is True, ack


async def control(ws: ClientConnection, *args: str) -> None:
    await ws.send(orjson.dumps({"op": "control", "args": list(args)}).decode())


# --- (1) control commands during a stall -----------------------------------------------------------


async def test_resume_over_the_socket_ends_the_stall_and_is_answered() -> None:
    async with bybit_ws_server() as server, connect(server.url) as ws:
        await control(ws, "stall")
        assert (await recv_json(ws))["ret_msg"] == "control"
        await control(ws, "resume")
        ack = await recv_json(ws)  # the old server never answered: the reply waited on the stall
        assert ack == {**ack, "success": True, "ret_msg": "control", "op": "control"}
        await ws.send('{"op": "ping", "req_id": "after"}')
        pong = await recv_json(ws)
        assert (pong["ret_msg"], pong["req_id"]) == ("pong", "after")


async def test_a_request_held_by_the_stall_does_not_keep_resume_from_being_read() -> None:
    async with bybit_ws_server() as server, connect(server.url) as ws:
        await control(ws, "stall")
        assert (await recv_json(ws))["ret_msg"] == "control"
        await ws.send('{"op": "ping", "req_id": "stalled"}')
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=0.3)  # the stall holds the pong back, as it should
        await control(ws, "resume")
        pong, ack = await recv_json(ws), await recv_json(ws)
        assert (pong["ret_msg"], pong["req_id"]) == ("pong", "stalled")
        assert ack["ret_msg"] == "control"
        assert server.pings == 1


async def test_drop_over_the_socket_during_a_stall_drops_at_once() -> None:
    async with bybit_ws_server() as server, connect(server.url) as ws:
        await control(ws, "stall")
        assert (await recv_json(ws))["ret_msg"] == "control"
        await control(ws, "drop")
        assert (await recv_json(ws))["ret_msg"] == "control"
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        await eventually(lambda: server.connections == 0)


# --- (2) every frame exactly once across drops -----------------------------------------------------


async def test_a_drop_while_the_next_frame_is_paced_does_not_skip_it() -> None:
    frames = kline_frames(4)
    received: list[dict[str, Any]] = []
    async with bybit_ws_server(frames, pace_s=0.3) as server:
        async with connect(server.url) as ws:
            await subscribe(ws, TOPIC)
            received.append(await recv_json(ws))
            await server.drop()  # the pump is now sleeping before frame 1, having seen a subscriber
        await asyncio.sleep(0.5)  # longer than the pace: the old pump found no one and skipped frame 1
        async with connect(server.url) as ws:
            await subscribe(ws, TOPIC)
            received.extend([await recv_json(ws) for _ in range(3)])
        assert server.frames_skipped == 0
    assert received == frames


async def test_every_frame_reaches_a_reconnecting_client_exactly_once_across_many_drops() -> None:
    frames = kline_frames(60)
    received: list[dict[str, Any]] = []
    rng = random.Random(11)

    async def reconnecting_client(server: BybitTestServer) -> None:
        while len(received) < len(frames):
            with contextlib.suppress(ConnectionClosed, OSError):
                async with connect(server.url, open_timeout=2) as ws:
                    await subscribe(ws, TOPIC)
                    async for message in ws:
                        received.append(orjson.loads(message))

    async with bybit_ws_server(frames, pace_s=0.01) as server:
        client = asyncio.create_task(reconnecting_client(server))
        try:
            for _ in range(12):
                await asyncio.sleep(rng.uniform(0.0, 0.06))
                await server.drop()
            await eventually(lambda: len(received) >= len(frames), timeout=20)
            await asyncio.sleep(0.1)  # a duplicate would arrive now
        finally:
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client
        assert server.connections_total > 5
    assert [f["data"][0]["start"] for f in received] == [f["data"][0]["start"] for f in frames]
    assert received == frames


async def test_a_book_delta_lost_to_a_drop_is_covered_by_the_snapshot_not_sent_twice() -> None:
    book = orderbook_frames("BTCUSDT", depth=50, deltas=6, start_u=100, seed=3)
    topic = "orderbook.50.BTCUSDT"
    async with bybit_ws_server(book, pace_s=0.3) as server:
        async with connect(server.url) as ws:
            await subscribe(ws, topic)
            first = await recv_json(ws)
            assert first["type"] == "snapshot"
            await server.drop()
        await asyncio.sleep(0.5)
        async with connect(server.url) as ws:
            await subscribe(ws, topic)
            updates = [await recv_json(ws)]
            while updates[-1]["data"]["u"] < book[-1]["data"]["u"]:
                updates.append(await recv_json(ws))
    # A fresh subscriber gets the current book, then consecutive deltas: no repeated or missing u.
    assert updates[0]["type"] == "snapshot"
    ids = [u["data"]["u"] for u in updates]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert ids[-1] == book[-1]["data"]["u"]
