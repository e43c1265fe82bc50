"""Settings of the metrics endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """Where ``/metrics`` is served."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus endpoint; 0 turns it off.")
    host: str = Field("127.0.0.1", description="Interface the endpoint binds to (0.0.0.0 in a container).")
    log_interval_s: float = Field(
        30.0, ge=0, description="The worker logs a throughput line (records/s, signals/s, lag) this often; 0 never."
    )
    lag_interval_s: float = Field(
        5.0, gt=0, description="How often the worker reads its partitions' end offsets for the lag gauge."
    )
    health_stale_s: float = Field(
        60.0, gt=0, description="/healthz fails once the event loop has not beaten for this long."
    )
