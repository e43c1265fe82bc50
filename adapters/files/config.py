"""Settings for file inputs and outputs."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


def default_data_dir() -> Path:
    """``$SIGSTREAM_DATA``, else ``../shared/data`` beside the working directory when present."""
    configured = os.environ.get("SIGSTREAM_DATA")
    if configured:
        return Path(configured)
    return Path.cwd().parent / "shared" / "data"


class FilesSettings(BaseModel):
    """Where datasets are read from and replay output is written."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Shared datasets (never copied in).")
    out_dir: Path = Field(Path("out"), description="Default folder for replay/backtest output.")
    news_date_format: str = Field("%d-%m-%Y %H:%M", description="strptime format of cryptonews.csv dates (UTC).")
