"""Settings of the metrics endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """Where ``/metrics`` is served."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus endpoint; 0 turns it off.")
    host: str = Field("127.0.0.1", description="Interface the endpoint binds to.")
