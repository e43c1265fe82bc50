"""Settings of the embedded bus and store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InProcessSettings(BaseModel):
    """Bounds that keep the embedded mode's memory flat on long runs."""

    model_config = ConfigDict(frozen=True)

    queue_size: int = Field(10_000, ge=1, description="Messages buffered per subscriber before publish waits.")
    recent_bars: int = Field(200, ge=1, description="Bars kept per symbol in the in-memory store.")
