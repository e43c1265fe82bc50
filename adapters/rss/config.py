"""Settings of the RSS/Atom news poller (``SIGSTREAM_RSS__...``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode


class RssSettings(BaseModel):
    """Which feeds to poll and how often."""

    model_config = ConfigDict(frozen=True)

    feeds: Annotated[tuple[str, ...], NoDecode] = Field(
        ("https://www.coindesk.com/arc/outboundfeeds/rss/",),
        description="RSS or Atom feed URLs, polled in order each cycle.",
    )
    poll_interval_s: float = Field(60.0, gt=0, description="Seconds between polling cycles.")
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one feed request.")
    attempts: int = Field(3, ge=1, description="Tries per feed per cycle on transient errors (5xx, network).")
    max_connect_attempts: int | None = Field(
        5, ge=1, description="Give up (exit 1) after this many polling cycles in a row in which no feed could be "
        "reached, while none ever was (an unreachable or wrong URL); None = keep polling forever.",
    )
    backoff_initial_s: float = Field(0.5, gt=0, description="First retry delay cap (full jitter).")
    user_agent: str = Field("sigstream/0.1 (+rss poller)", description="User-Agent header sent to feeds.")
    max_seen: int = Field(100_000, ge=1, description="Item ids remembered for de-duplication.")

    @field_validator("feeds", mode="before")
    @classmethod
    def _split_feeds(cls, value: object) -> object:
        # Environment variables arrive as "url1,url2" (NoDecode: not parsed as JSON first).
        if isinstance(value, str):
            return tuple(url.strip() for url in value.split(",") if url.strip())
        return value
