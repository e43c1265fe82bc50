"""Typed engine configuration. The root settings object (env prefix ``SIGSTREAM_``, nested ``__``)
lives in :mod:`sigstream.settings`; these are its engine sections, e.g.
``SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD=0.8``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode

from engine.events import Interval


def parse_symbol_list(value: object) -> object:
    """``"btcusdt, ETHUSDT"`` -> ``("BTCUSDT", "ETHUSDT")``; anything else is left for pydantic to check."""
    if isinstance(value, str):
        return tuple(s.strip().upper() for s in value.split(",") if s.strip())
    return value


# Environment variables and CLI flags carry symbol lists as one comma-separated string. NoDecode
# stops pydantic-settings from reading a tuple field's environment value as JSON first.
SymbolList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(parse_symbol_list)]

DEFAULT_SYMBOL_NAMES: dict[str, str] = {
    "bitcoin": "BTCUSDT",
    "btc": "BTCUSDT",
    "xbt": "BTCUSDT",
    "ethereum": "ETHUSDT",
    "ether": "ETHUSDT",
    "eth": "ETHUSDT",
    "cardano": "ADAUSDT",
    "ada": "ADAUSDT",
    "dogecoin": "DOGEUSDT",
    "doge": "DOGEUSDT",
    "polkadot": "DOTUSDT",
    "dot": "DOTUSDT",
    "solana": "SOLUSDT",
    "sol": "SOLUSDT",
    "ripple": "XRPUSDT",
    "xrp": "XRPUSDT",
}


class BatcherSettings(BaseModel):
    """Sentiment micro-batching."""

    model_config = ConfigDict(frozen=True)

    max_batch: int = Field(64, ge=1, le=4096, description="Texts per model call at most.")
    max_wait_ms: int = Field(50, ge=0, le=60_000, description="Longest a text waits for its batch to fill.")
    max_text_chars: int = Field(4000, ge=1, description="Longer texts are rejected as InvalidInput.")
    cache_size: int = Field(20_000, ge=0, description="Recently scored texts kept to skip the model.")


class AggregatorSettings(BaseModel):
    """Confidence-weighted news vote."""

    model_config = ConfigDict(frozen=True)

    window_ms: int = Field(86_400_000, gt=0, description="Only news published within this window counts.")
    half_life_ms: int = Field(21_600_000, gt=0, description="A news item's weight halves every half-life.")
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="Confidence at or above which a signal is actionable.")
    min_sources: int = Field(1, ge=1, description="News items needed before a signal can be actionable.")


class SymbolMapSettings(BaseModel):
    """How news is mapped to trading symbols."""

    model_config = ConfigDict(frozen=True)

    names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SYMBOL_NAMES),
        description="Lower-case name, ticker or tag -> symbol (bitcoin -> BTCUSDT).",
    )
    quote: str = Field("USDT", description="Quote currency appended to cashtags ($BTC -> BTCUSDT).")

    @field_validator("names")
    @classmethod
    def _lower_keys(cls, names: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v.upper() for k, v in names.items()}


class EngineSettings(BaseModel):
    """Everything the pure engine needs."""

    model_config = ConfigDict(frozen=True)

    interval: Interval = Field(Interval.M1, description="Bar interval features are computed on.")
    bars_from: Literal["klines", "trades"] = Field(
        "klines", description="Use the venue's confirmed klines, or build bars from trades (never both)."
    )
    batcher: BatcherSettings = Field(default_factory=BatcherSettings)
    aggregator: AggregatorSettings = Field(default_factory=AggregatorSettings)
    symbols: SymbolMapSettings = Field(default_factory=SymbolMapSettings)
