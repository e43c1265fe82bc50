"""Settings of the Redis feature cache (``SIGSTREAM_REDIS__...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RedisSettings(BaseModel):
    """Whether and where features are cached, and how long they live."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(
        None,
        description="redis:// URL (database number in the path) of the feature cache; unset: no Redis, features "
        "stay in process. --redis URL or SIGSTREAM_REDIS__URL turns the cache on, and nothing else does.",
    )
    key_prefix: str = Field("sigstream", description="Prefix of every key, so deployments can share a Redis.")
    ttl_s: int = Field(7 * 86_400, ge=1, description="Keys of a symbol not updated for this long expire.")
    max_bars: int = Field(500, ge=1, description="Recent bars kept per symbol (enough to warm features).")
    warm_bars: int = Field(200, ge=1, description="Bars a cold worker reads per symbol to restore features.")
    flush_max_items: int = Field(256, ge=1, description="Pending writes that trigger a pipelined flush.")
    flush_interval_ms: int = Field(100, ge=1, description="Longest a write waits for its pipeline.")
    socket_timeout_s: float = Field(2.0, gt=0, description="Per-command socket timeout.")
    reconnect_initial_s: float = Field(0.2, gt=0, description="First reconnect delay cap (full jitter).")
    reconnect_max_s: float = Field(5.0, gt=0, description="Largest reconnect delay cap.")

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # SIGSTREAM_REDIS__URL= (empty) is no URL, as if unset.
        return None if isinstance(value, str) and not value.strip() else value
