"""Where labelled datasets are read from."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


def _default_data_dir() -> Path:
    env = os.environ.get("SIGSTREAM_DATA")
    return Path(env) if env else Path("../shared/data")


class DatasetSettings(BaseModel):
    """Paths and the fixed held-out split of the labelled sentiment sets."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Root of the shared data ($SIGSTREAM_DATA, default ../shared/data).",
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of FPB held out as the test split.")
    split_seed: int = Field(42, description="Seed of the fixed stratified FPB train/test split.")
