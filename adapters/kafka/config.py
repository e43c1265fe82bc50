"""Settings of the Kafka transport (``SIGSTREAM_KAFKA__...``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def default_cache_dir() -> Path:
    """``$SIGSTREAM_CACHE``, else ``$XDG_CACHE_HOME/sigstream``, else ``~/.cache/sigstream``."""
    if os.environ.get("SIGSTREAM_CACHE"):
        return Path(os.environ["SIGSTREAM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sigstream"


class TopicNames(BaseModel):
    """Topic names; every one can be renamed, e.g. ``SIGSTREAM_KAFKA__TOPICS__SIGNALS=prod.signals``."""

    model_config = ConfigDict(frozen=True)

    market_raw: str = Field("market.raw", description="Raw venue frames and market events, keyed by symbol.")
    market_bars: str = Field("market.bars", description="Closed bars with their features, keyed by symbol.")
    news_raw: str = Field("news.raw", description="News items, keyed by news id.")
    sentiment: str = Field("sentiment.scores", description="Per-news sentiment scores, keyed by news id.")
    signals: str = Field("signals.composite", description="Composite signals, keyed by symbol.")
    deadletter: str = Field("deadletter", description="Records that could not be processed, with the reason.")
    state: str = Field(
        "", description="Compacted topic of the workers' partition snapshots; empty: '<app_id>.state'."
    )

    def all(self) -> tuple[str, ...]:
        return (
            self.market_raw,
            self.market_bars,
            self.news_raw,
            self.sentiment,
            self.signals,
            self.deadletter,
        )


class KafkaSettings(BaseModel):
    """Kafka brokers, topics and delivery guarantees for the faust worker and the publisher."""

    model_config = ConfigDict(frozen=True)

    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of brokers.")
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of each topic sigstream creates.")
    replication_factor: int = Field(1, ge=1, description="Replicas of each topic sigstream creates.")
    app_id: str = Field("sigstream", description="faust application id = Kafka consumer group id.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="faust processing guarantee; exactly_once uses Kafka transactions."
    )
    idempotent_producer: bool = Field(True, description="Producer retries never write duplicates (acks=all).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often processed offsets are committed.")
    snapshots: bool = Field(
        True, description="Snapshot each partition's engine state every second, so a restart continues exactly."
    )
    stream_buffer: int = Field(65_536, ge=16, description="Records faust buffers per stream before pausing.")
    linger_ms: int = Field(5, ge=0, description="Producer linger: small batches, low latency.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="A worker silent this long (killed, hung) loses its partitions to the others."
    )
    heartbeat_interval_s: float = Field(3.0, gt=0, description="How often a worker tells the group it is alive.")
    max_outage_s: float = Field(
        300.0, gt=0, description="Longest the publisher waits for an unreachable broker before it exits 1."
    )
    stop_timeout_s: float = Field(
        20.0, gt=0, description="Longest a stop may take (e.g. an unreachable broker); then the worker exits 1."
    )
    request_timeout_ms: int = Field(30_000, ge=1000, description="Producer/consumer request timeout.")
    data_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "faust",
        description="faust's local data folder (tables are in memory); made absolute and created at start.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # faust resolves a relative folder against the working directory and never creates its parent.
        return path.expanduser().resolve()

    def state_topic(self) -> str:
        """Snapshots belong to one consumer group: by default the topic is named after the app id."""
        return self.topics.state or f"{self.app_id}.state"

    def broker_url(self) -> str:
        """faust's broker URL form: ``kafka://host:port;host:port``."""
        return ";".join(f"kafka://{h.strip()}" for h in self.bootstrap.split(",") if h.strip())
