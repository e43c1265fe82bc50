"""Backtest settings: capital, sizing and trading costs."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BacktestSettings(BaseModel):
    """How the simulated account trades. The confidence threshold lives in the aggregator settings."""

    initial_capital: float = Field(100_000.0, gt=0, description="Starting equity, in quote currency.")
    position_size: float = Field(0.1, gt=0, le=1.0, description="Position notional as a fraction of equity.")
    fee_bps: float = Field(5.0, ge=0, le=1_000, description="Fee per fill, in basis points of its notional.")
    slippage_bps: float = Field(2.0, ge=0, le=1_000, description="Fill price worse than the open by this much.")
    allow_short: bool = Field(False, description="SELL goes short when true, else it only flattens a long.")

    @property
    def fee_rate(self) -> float:
        return self.fee_bps / 10_000.0

    @property
    def slippage_rate(self) -> float:
        return self.slippage_bps / 10_000.0
