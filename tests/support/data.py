"""Where the shared datasets live: $SIGSTREAM_DATA, else ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    configured = os.environ.get("SIGSTREAM_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    if not (path / "bybit").is_dir():
        raise FileNotFoundError(f"shared data not found at {path}; set SIGSTREAM_DATA")
    return path
