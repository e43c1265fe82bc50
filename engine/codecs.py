"""Venue codecs: how one venue's raw frames become engine events, registered by that venue's adapter.

Shared transports (file recordings, the Kafka ``market.raw`` topic) carry raw frames tagged with their
venue and look the venue up here instead of importing its adapter, so adapters stand alone: the next
venue registers its codec and every transport can carry its frames. The composition root imports the
venue adapters' codec modules (:mod:`sigstream.codecs`), which call :func:`register_codec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from engine.errors import InvalidInput
from engine.events import Event, Interval, MarketEvent


class FrameDecoder(Protocol):
    """A stateful decoder (order books, ticker deltas). Required: ``decode``."""

    def decode(self, frame: Mapping[str, Any], ts_init: int) -> list[Event]:
        """Events from one frame; raises :class:`InvalidInput` with the reason for a bad one."""


class VenueCodec(Protocol):
    """One venue's wire format. Required: ``venue``, ``decoder``, ``decode``, ``symbol``, ``interval``.

    ``venue`` names the recording lines' ``source`` and, capitalised with ``Frame``, the type of the
    ``market.raw`` envelope (``BybitFrame``).
    """

    venue: str

    def decoder(self) -> FrameDecoder:
        """A fresh stateful decoder, for a stream read in order (recordings)."""

    def decode(self, frame: Mapping[str, Any], ts_init: int) -> list[MarketEvent]:
        """Stateless decoding of one frame (Kafka records are decoded one by one); frames that need
        state (order book deltas) give no events."""

    def symbol(self, frame: Mapping[str, Any]) -> str:
        """The symbol a frame is about (the ``market.raw`` key); :class:`InvalidInput` if it has none."""

    def interval(self, frame: Mapping[str, Any]) -> Interval | None:
        """The bar interval of a kline frame; None for any other frame."""


_CODECS: dict[str, VenueCodec] = {}


def register_codec(codec: VenueCodec) -> None:
    """Make ``codec`` the one for ``codec.venue`` (registering the same venue again replaces it)."""
    _CODECS[codec.venue] = codec


def venue_codec(venue: object) -> VenueCodec:
    """The registered codec of ``venue``; :class:`InvalidInput` naming the known venues otherwise."""
    codec = _CODECS.get(venue) if isinstance(venue, str) else None
    if codec is None:
        known = ", ".join(sorted(_CODECS)) or "none registered"
        raise InvalidInput(f"no codec for venue {venue!r} (known: {known})")
    return codec


def envelope_venue(type_name: object) -> str | None:
    """The venue of a ``market.raw`` envelope type (``BybitFrame`` -> ``bybit``), if one is registered."""
    if not isinstance(type_name, str) or not type_name.endswith("Frame"):
        return None
    venue = type_name[: -len("Frame")].lower()
    return venue if venue in _CODECS else None


def envelope_type(venue: str) -> str:
    """The ``market.raw`` envelope type of a venue's raw frames."""
    return f"{venue.capitalize()}Frame"
