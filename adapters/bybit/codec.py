"""Bybit's v5 frame codec, registered for the shared transports (file recordings, Kafka market.raw).

Importing this module registers it (:func:`engine.codecs.register_codec`); the composition root does
that in :mod:`sigstream.codecs`, so no other adapter needs to import this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.bybit.decoder import FrameDecoder
from adapters.bybit.parsing import OrderBookUpdate, parse_frame, parse_interval
from engine.codecs import register_codec
from engine.errors import InvalidInput
from engine.events import Interval, MarketEvent

VENUE = "bybit"


class BybitCodec:
    """Implements :class:`engine.codecs.VenueCodec` with this adapter's parser."""

    venue = VENUE

    def decoder(self) -> FrameDecoder:
        return FrameDecoder()

    def decode(self, frame: Mapping[str, Any], ts_init: int) -> list[MarketEvent]:
        # A book delta needs its book: without the stream before it, it gives no top of book.
        return [item for item in parse_frame(frame, ts_init) if not isinstance(item, OrderBookUpdate)]  # type: ignore[misc]  # frames of public topics hold market events only

    def symbol(self, frame: Mapping[str, Any]) -> str:
        topic = frame.get("topic")
        if not isinstance(topic, str) or "." not in topic:
            raise InvalidInput(f"frame has no symbol topic: {str(topic)[:80]!r}")
        return topic.rsplit(".", 1)[1]

    def interval(self, frame: Mapping[str, Any]) -> Interval | None:
        topic = frame.get("topic")
        if not isinstance(topic, str) or not topic.startswith("kline."):
            return None
        parts = topic.split(".")
        if len(parts) != 3:
            return None
        try:
            return parse_interval(parts[1])
        except InvalidInput:
            return None


register_codec(BybitCodec())
