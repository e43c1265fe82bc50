"""Stateful Bybit frame decoding: :func:`parse_frame` plus the local order books and ticker merging.

Live (the websocket source) and replay (the recording reader) both decode through this, so they
produce the same engine events from the same frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.bybit.orderbook import LocalOrderBook
from adapters.bybit.parsing import OrderBookUpdate, decode_message, merge_ticker, parse_frame
from engine.events import Event, Ticker


class FrameDecoder:
    """Decodes frames into engine events only (order book updates become :class:`BookTop`).

    Raises :class:`engine.errors.InvalidInput` for bad frames, and its subclass
    :class:`adapters.bybit.orderbook.OrderBookOutOfSync` when a book delta cannot be applied (its
    ``resync`` flag says the caller should resubscribe to ``topic`` for a fresh snapshot).
    """

    def __init__(self) -> None:
        self.books: dict[str, LocalOrderBook] = {}
        self.tickers: dict[str, Ticker] = {}

    def decode(self, frame: Mapping[str, Any], ts_init: int) -> list[Event]:
        """Events from one decoded frame."""
        out: list[Event] = []
        for item in parse_frame(frame, ts_init):
            if isinstance(item, OrderBookUpdate):
                book = self.books.get(item.topic)
                if book is None:
                    book = self.books[item.topic] = LocalOrderBook(item.topic, item.symbol)
                out.append(book.apply(item))
            elif isinstance(item, Ticker):
                merged = merge_ticker(self.tickers.get(item.symbol), item)
                self.tickers[item.symbol] = merged
                out.append(merged)
            else:
                out.append(item)
        return out

    def decode_message(self, message: str | bytes, ts_init: int) -> list[Event]:
        """Events from one raw websocket text message (malformed JSON raises InvalidInput)."""
        return self.decode(decode_message(message), ts_init)
