"""Immutable, typed events: frozen msgspec Structs, cheap to build on hot paths.

Every event carries two times in **epoch milliseconds**:

* ``ts_event`` - when it happened at the venue or publisher;
* ``ts_init``  - when sigstream received (or, in replay, would have received) it.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from engine.errors import InvalidInput


class Interval(StrEnum):
    """Bar intervals the engine supports (CLI spelling)."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def ms(self) -> int:
        return _INTERVAL_MS[self]

    @classmethod
    def parse(cls, text: str) -> Interval:
        try:
            return cls(text)
        except ValueError:
            allowed = "|".join(i.value for i in cls)
            raise InvalidInput(f"unknown interval {text!r}; expected one of {allowed}") from None


_INTERVAL_MS = {
    Interval.M1: 60_000,
    Interval.M5: 300_000,
    Interval.M15: 900_000,
    Interval.H1: 3_600_000,
    Interval.D1: 86_400_000,
}


class Side(StrEnum):
    """Aggressor side of a trade."""

    BUY = "Buy"
    SELL = "Sell"


class Signal(StrEnum):
    """Composite trading signal. Sentiment labels map bearish->SELL, neutral->HOLD, bullish->BUY."""

    SELL = "SELL"
    HOLD = "HOLD"
    BUY = "BUY"


# Order of the model's probability vector and of SentimentScore's fields.
SENTIMENT_LABELS: tuple[str, str, str] = ("bearish", "neutral", "bullish")
LABEL_TO_SIGNAL: dict[str, Signal] = {"bearish": Signal.SELL, "neutral": Signal.HOLD, "bullish": Signal.BUY}
# Every label vocabulary accepted from outside (datasets, a model's own head), mapped explicitly onto the
# index of SENTIMENT_LABELS.
SENTIMENT_LABEL_INDEX: dict[str, int] = {
    "bearish": 0,
    "negative": 0,
    "neutral": 1,
    "bullish": 2,
    "positive": 2,
}


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One public trade."""

    symbol: str
    price: float
    size: float
    side: Side
    trade_id: str
    ts_event: int
    ts_init: int


class Bar(msgspec.Struct, frozen=True, gc=False):
    """A closed OHLCV bar of one symbol and one interval. ``ts_event`` is the bar's close time."""

    symbol: str
    interval: Interval
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    ts_event: int
    ts_init: int


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """Best bid/ask and last price from a ticker stream (kept for downstream consumers)."""

    symbol: str
    last_price: float | None
    bid: float | None
    ask: float | None
    ts_event: int
    ts_init: int


class BookTop(msgspec.Struct, frozen=True, gc=False):
    """Top of a locally maintained order book, emitted after each applied snapshot or delta."""

    symbol: str
    best_bid: float | None
    best_ask: float | None
    bid_size: float | None
    ask_size: float | None
    update_id: int
    ts_event: int
    ts_init: int


class NewsItem(msgspec.Struct, frozen=True, gc=False):
    """A news headline (and optional body). ``ts_event`` is the publish time."""

    id: str
    source: str
    headline: str
    body: str
    symbols: tuple[str, ...]
    tags: tuple[str, ...]
    url: str
    ts_event: int
    ts_init: int

    @property
    def published(self) -> int:
        return self.ts_event

    @property
    def text(self) -> str:
        """What the sentiment model reads: the headline, plus the body when there is one."""
        return f"{self.headline}. {self.body}" if self.body else self.headline


class SentimentScore(msgspec.Struct, frozen=True, gc=False):
    """Model output for one news item."""

    news_id: str
    symbols: tuple[str, ...]
    bearish: float
    neutral: float
    bullish: float
    label: str
    confidence: float
    ts_event: int
    ts_init: int

    @property
    def signal(self) -> Signal:
        return LABEL_TO_SIGNAL[self.label]


FEATURE_NAMES: tuple[str, ...] = (
    "return_1",
    "return_5",
    "return_20",
    "volume_ratio",
    "volatility_20",
    "rsi_14",
    "macd",
    "bb_position",
    "atr_ratio",
    "vwap_distance",
)


class Features(msgspec.Struct, frozen=True, gc=False):
    """The ten rolling features of one symbol after one closed bar.

    Window features are ``None`` until their window fills; the exponential ones (RSI, MACD, ATR) are seeded
    from the first bar, like pandas ``ewm(adjust=False)``, so they appear at once.
    """

    symbol: str
    interval: Interval
    start: int
    close: float
    return_1: float | None
    return_5: float | None
    return_20: float | None
    volume_ratio: float | None
    volatility_20: float | None
    rsi_14: float | None
    macd: float | None
    bb_position: float | None
    atr_ratio: float | None
    vwap_distance: float | None
    ts_event: int
    ts_init: int

    def values(self) -> dict[str, float | None]:
        """The ten features by name, in contract order."""
        return {name: getattr(self, name) for name in FEATURE_NAMES}


class CompositeSignal(msgspec.Struct, frozen=True, gc=False):
    """Confidence-weighted vote of recent news sentiment for one symbol, with its latest features."""

    symbol: str
    signal: Signal
    confidence: float
    score_sell: float
    score_hold: float
    score_buy: float
    num_sources: int
    actionable: bool
    features: Features | None
    ts_event: int
    ts_init: int
    cause: str  # what decided it: "bar" (a closed bar) or "news:<news id>" (that item's sentiment)
    # False while the symbol has no market data (no bar yet, or never: news about a symbol whose prices are not
    # fed). Such a signal is still emitted, and actionable only when news-only signals are asked for.
    market_data: bool = True

    @property
    def scores(self) -> dict[str, float]:
        return {"SELL": self.score_sell, "HOLD": self.score_hold, "BUY": self.score_buy}

    @property
    def id(self) -> str:
        """Deterministic id: the same decision made twice (a re-delivery after a restart) has the same id,
        so a downstream consumer can drop the second copy."""
        return f"{self.symbol}:{self.ts_event}:{self.cause}"


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """A record that could not be processed, with why and where it came from."""

    reason: str
    source: str
    raw: str
    line: int | None
    ts_init: int


Event = Trade | Bar | Ticker | BookTop | NewsItem | SentimentScore | Features | CompositeSignal
MarketEvent = Trade | Bar | Ticker | BookTop


class Received(msgspec.Struct, frozen=True, gc=False):
    """One venue message as it arrived, with the market events decoded from it (none for a bad message,
    which its source dead-letters). Live recordings keep ``raw``, so a replay decodes the same bytes.

    ``reconnected`` marks the first message of a connection that replaced a dropped one: what the venue
    published in between is gone, and a live driver may backfill it before processing this message. It is
    not part of the recording (the backfilled bars are, as messages of their own)."""

    source: str
    raw: str
    events: tuple[MarketEvent, ...]
    ts_init: int
    reconnected: bool = False
