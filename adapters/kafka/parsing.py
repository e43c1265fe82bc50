"""Kafka record values -> engine events. The wire formats of market.raw and news.raw.

market.raw values are either a raw venue frame in an envelope, parsed by that venue's parser::

    {"v": 1, "type": "BybitFrame", "ts_init": 1717171717000, "frame": {...Bybit v5 public frame...}}

or an already-parsed market event (``Bar``, ``Trade``, ``Ticker``, ``BookTop``) as written by
:func:`engine.serialization.encode_event`, or the publisher's end-of-replay ``Watermark``.
news.raw values are ``NewsItem`` payloads of :func:`engine.serialization.encode_event`.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.bybit.parsing import OrderBookUpdate, parse_frame
from engine.errors import InvalidInput
from engine.events import Bar, BookTop, NewsItem, Ticker, Trade
from engine.serialization import SCHEMA_VERSION, decode_event

MarketItem = Trade | Bar | Ticker | BookTop | OrderBookUpdate
WATERMARK = "Watermark"


def encode_frame(frame: dict[str, Any], ts_init: int, venue: str = "bybit") -> bytes:
    """Envelope for a raw venue frame on market.raw."""
    if venue != "bybit":
        raise InvalidInput(f"no parser for venue {venue!r}")
    return orjson.dumps({"v": SCHEMA_VERSION, "type": "BybitFrame", "ts_init": ts_init, "frame": frame})


def encode_watermark(ts_init: int) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, "type": WATERMARK, "ts_init": ts_init})


def frame_symbol(frame: dict[str, Any]) -> str:
    """The symbol a Bybit frame is about (last part of its topic), the market.raw key."""
    topic = frame.get("topic")
    if not isinstance(topic, str) or "." not in topic:
        raise InvalidInput(f"frame has no symbol topic: {str(topic)[:80]!r}")
    return topic.rsplit(".", 1)[1]


def decode_market(value: bytes) -> list[MarketItem] | None:
    """A market.raw value -> its events; ``None`` for a watermark. Raises InvalidInput with the reason."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("market record is not a JSON object")
    kind = data.get("type")
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidInput(f"unsupported schema version {data.get('v')!r}")
    match kind:
        case "BybitFrame":
            ts_init = data.get("ts_init")
            if not isinstance(ts_init, int) or isinstance(ts_init, bool):
                raise InvalidInput(f"BybitFrame has no integer ts_init: {ts_init!r}")
            return list(parse_frame(data.get("frame"), ts_init))  # type: ignore[arg-type]  # venue frames hold market events only
        case "Watermark":
            return None
        case "Bar" | "Trade" | "Ticker" | "BookTop":
            event = decode_event(value)
            assert isinstance(event, Trade | Bar | Ticker | BookTop)
            return [event]
        case _:
            raise InvalidInput(f"unexpected record type {kind!r} on the market topic")


def decode_news(value: bytes) -> NewsItem:
    event = decode_event(value)
    if not isinstance(event, NewsItem):
        raise InvalidInput(f"expected a NewsItem on the news topic, got {type(event).__name__}")
    return event
