"""Kafka record values -> engine events. The wire formats of market.raw and news.raw.

market.raw values are either a raw venue frame in an envelope, decoded by that venue's registered codec
(:mod:`engine.codecs`; the Bybit adapter registers ``BybitFrame``)::

    {"v": 1, "type": "BybitFrame", "ts_init": 1717171717000, "frame": {...Bybit v5 public frame...}}

or an already-parsed market event (``Bar``, ``Trade``, ``Ticker``, ``BookTop``) as written by
:func:`engine.serialization.encode_event`, or the publisher's end-of-replay ``Watermark``.
news.raw values are ``NewsItem`` payloads of :func:`engine.serialization.encode_event`.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.codecs import envelope_type, envelope_venue, venue_codec
from engine.errors import InvalidInput
from engine.events import Bar, BookTop, MarketEvent, NewsItem, Ticker, Trade
from engine.serialization import SCHEMA_VERSION, decode_event

WATERMARK = "Watermark"


def encode_frame(frame: dict[str, Any], ts_init: int, venue: str) -> bytes:
    """Envelope for a raw venue frame on market.raw; ``venue`` must have a registered codec."""
    venue_codec(venue)  # InvalidInput naming the known venues
    return orjson.dumps({"v": SCHEMA_VERSION, "type": envelope_type(venue), "ts_init": ts_init, "frame": frame})


def encode_watermark(ts_init: int) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, "type": WATERMARK, "ts_init": ts_init})


def decode_market(value: bytes) -> list[MarketEvent] | None:
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
    venue = envelope_venue(kind)
    if venue is not None:
        ts_init = data.get("ts_init")
        if not isinstance(ts_init, int) or isinstance(ts_init, bool):
            raise InvalidInput(f"{kind} has no integer ts_init: {ts_init!r}")
        frame = data.get("frame")
        if not isinstance(frame, dict):
            raise InvalidInput(f"{kind} has no frame object")
        return venue_codec(venue).decode(frame, ts_init)
    match kind:
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
