"""Settings of the Bybit v5 public websocket source (``SIGSTREAM_BYBIT__...``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.config import SymbolList
from engine.events import Interval

Category = Literal["linear", "inverse", "spot", "option"]


class BybitSettings(BaseModel):
    """Bybit v5 public market data over websocket (the REST backfill is ccxt's: ``SIGSTREAM_CCXT__REST_URL``)."""

    model_config = ConfigDict(frozen=True)

    ws_url: str = Field(
        "wss://stream.bybit.com/v5/public/linear",
        description="Public websocket endpoint; its path names the category.",
    )
    category: Category = Field("linear", description="Bybit product category the symbols belong to.")
    symbols: SymbolList = Field(("BTCUSDT",), description="Symbols to subscribe to, Bybit spelling.")
    interval: Interval = Field(Interval.M1, description="Kline interval subscribed as kline.{i}.{S}.")
    orderbook_depth: int = Field(50, description="Order book depth (1, 50, 200 or 500 on linear); 0 = none.")
    trades: bool = Field(True, description="Subscribe to publicTrade.{S}.")
    klines: bool = Field(True, description="Subscribe to kline.{i}.{S}.")
    tickers: bool = Field(True, description="Subscribe to tickers.{S}.")
    ping_interval_s: float = Field(20.0, gt=0, description="Seconds between {'op':'ping'} heartbeats.")
    pong_timeout_s: float = Field(10.0, gt=0, description="A ping unanswered this long drops the connection.")
    open_timeout_s: float = Field(10.0, gt=0, description="Websocket connect/handshake timeout.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First reconnect delay cap (full jitter).")
    backoff_max_s: float = Field(30.0, gt=0, description="Largest reconnect delay cap.")
    backoff_factor: float = Field(2.0, ge=1.0, description="Growth of the reconnect delay cap per failure.")
    max_reconnects: int | None = Field(None, ge=0, description="Give up after this many reconnects; None = never.")
    max_connect_attempts: int | None = Field(
        5, ge=1, description="Give up (exit 1) when this many attempts in a row failed and none ever connected "
        "(an unreachable or wrong URL); None = retry forever. Reconnects after a working connection: max_reconnects.",
    )
    queue_size: int = Field(10_000, ge=1, description="Parsed events buffered between socket and consumer.")

    @field_validator("orderbook_depth")
    @classmethod
    def _known_depth(cls, depth: int) -> int:
        if depth not in (0, 1, 25, 50, 100, 200, 500, 1000):
            raise ValueError(f"orderbook depth {depth} is not one Bybit offers")
        return depth
