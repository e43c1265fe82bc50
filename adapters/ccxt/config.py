"""Settings of the ccxt OHLCV backfill (``SIGSTREAM_CCXT__...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.config import SymbolList
from engine.events import Interval


class CcxtSettings(BaseModel):
    """Which exchange ccxt talks to, where, how much history warms the features at start-up, and whether the
    bars a reconnect missed are fetched too."""

    model_config = ConfigDict(frozen=True)

    exchange: str = Field("bybit", description="ccxt exchange id (the async client is used).")
    rest_url: str | None = Field(
        None, description="Base URL replacing every ccxt API URL (a local test server); None = ccxt's default."
    )
    category: str = Field("linear", description="Bybit market category loaded by load_markets.")
    symbols: SymbolList = Field(("BTCUSDT",), description="Exchange symbol ids to backfill (BTCUSDT).")
    interval: Interval = Field(Interval.M1, description="Bar interval to backfill.")
    limit: int = Field(
        200, ge=1, le=999, description="Most recent closed bars per symbol (one request of limit+1; Bybit caps 1000)."
    )
    timeout_ms: int = Field(10_000, ge=100, description="ccxt HTTP timeout per request.")
    attempts: int = Field(3, ge=1, description="Tries per request on network errors.")
    heal_gaps: bool = Field(
        True,
        description="After a websocket reconnect, `run` fetches the closed bars it missed over REST (independent "
        "of `limit`/`--backfill`, which only size the start-up warm-up).",
    )
