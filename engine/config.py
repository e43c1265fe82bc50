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
    prior_strength: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="Total mass of the symmetric Dirichlet prior over SELL/HOLD/BUY: the evidence a decision needs "
        "before its confidence approaches its vote share (one item alone stays below (1/3 + 1) / 2).",
    )
    news_only: bool = Field(
        False, description="Let signals of symbols without market data (no bar yet) be actionable on news alone."
    )


PolicyName = Literal["sentiment", "features", "composite", "buy_and_hold", "direction"]


class PolicySettings(BaseModel):
    """Which :class:`engine.ports.SignalPolicy` turns the evidence (news vote + features) into the signal."""

    model_config = ConfigDict(frozen=True)

    name: PolicyName = Field(
        "sentiment",
        description="sentiment (the news vote), features (trend/RSI filter), composite (news gated by the trend), "
        "buy_and_hold (always long; a benchmark), direction (the text + features model; needs model_dir).",
    )
    model_dir: str | None = Field(None, description="Trained direction model folder (sigstream direction train).")
    trend_feature: Literal["return_20", "return_5", "macd"] = Field(
        "return_20", description="Feature whose sign is the trend for the features and composite policies."
    )
    rsi_overbought: float = Field(70.0, gt=50.0, le=100.0, description="No new long at or above this RSI.")
    rsi_oversold: float = Field(30.0, ge=0.0, lt=50.0, description="No new short (or exit) at or below this RSI.")
    direction_threshold: float = Field(
        0.45, ge=0.0, le=1.0, description="Probability of Up (Down) at or above which the direction model acts."
    )


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
    policy: PolicySettings = Field(default_factory=PolicySettings)
    symbols: SymbolMapSettings = Field(default_factory=SymbolMapSettings)
