"""BybitWsClient's subscription bookkeeping when a send fails (the socket itself is tested in integration)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.bybit.client import BybitWsClient
from adapters.bybit.config import BybitSettings
from adapters.system.clock import WallClock
from engine.errors import TransientError


async def subscribed_client(fail_sends: bool) -> tuple[BybitWsClient, list[dict[str, Any]]]:
    """A "connected" client subscribed to trades and a book, whose sends are recorded (and fail if asked)."""
    client = BybitWsClient(BybitSettings(), clock=WallClock())
    await client.subscribe(["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT"])
    sent: list[dict[str, Any]] = []

    async def send(payload: dict[str, Any]) -> None:
        sent.append(payload)
        if fail_sends:
            raise TransientError("bybit websocket closed while sending")

    client._ws = object()  # type: ignore[assignment]  # "connected": only _send touches it, and it is replaced
    client._send = send  # type: ignore[method-assign]
    return client, sent


async def test_resubscribe_keeps_the_topic_when_the_link_fails_mid_way() -> None:
    # An order-book gap often comes with a failing link. If the unsubscribe cannot be sent, the topic must
    # still be in the set the reconnect subscribes, or the book goes silent for good.
    client, sent = await subscribed_client(fail_sends=True)
    with pytest.raises(TransientError):
        await client.resubscribe("orderbook.50.BTCUSDT")
    assert [p["op"] for p in sent] == ["unsubscribe"]
    assert client.topics == ["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT"]


async def test_resubscribe_sends_unsubscribe_then_subscribe_for_that_topic_only() -> None:
    client, sent = await subscribed_client(fail_sends=False)
    await client.resubscribe("orderbook.50.BTCUSDT")
    assert [(p["op"], p["args"]) for p in sent] == [
        ("unsubscribe", ["orderbook.50.BTCUSDT"]),
        ("subscribe", ["orderbook.50.BTCUSDT"]),
    ]
    assert client.topics == ["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT"]
