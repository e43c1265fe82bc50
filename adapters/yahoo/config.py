"""Settings of the Yahoo Finance loader (``SIGSTREAM_YAHOO__...`` where wired)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class YahooSettings(BaseModel):
    """Where yfinance fetches from and how its answers are read."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = Field(
        None,
        description="Send every Yahoo request (query1/query2/fc.yahoo.com) to this base URL instead, e.g. a local "
        "recording server; None = Yahoo itself.",
    )
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout per request.")
    auto_adjust: bool = Field(True, description="Adjust open/high/low/close for splits and dividends (yfinance).")
    cache_dir: str | None = Field(
        None, description="yfinance's cookie and timezone cache folder; None = yfinance's default (user cache)."
    )
