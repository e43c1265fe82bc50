"""Settings of the live dashboard page."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DashboardSettings(BaseModel):
    """Where the dashboard is served and how much history each page keeps."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(0, ge=0, le=65535, description="Port of the dashboard page; 0 turns it off (run) or picks one.")
    host: str = Field("127.0.0.1", description="Interface the page binds to (0.0.0.0 to reach it from elsewhere).")
    bars: int = Field(300, ge=10, le=100_000, description="Bars kept per symbol for the price chart.")
    signals: int = Field(300, ge=1, le=100_000, description="Signals kept per symbol for the chart's markers.")
    news: int = Field(50, ge=1, le=10_000, description="Recent scored news items kept for the news list.")
    client_queue: int = Field(
        2_000, ge=10, description="Updates buffered per open page; a page that falls further behind is reconnected "
        "and gets a fresh snapshot (the browser reconnects by itself)."
    )
