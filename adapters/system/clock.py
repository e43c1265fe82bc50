"""Wall clock for live runs; the engine only ever sees it through the Clock port."""

from __future__ import annotations

import time


class WallClock:
    """Implements :class:`engine.ports.Clock` with the system's UTC time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
