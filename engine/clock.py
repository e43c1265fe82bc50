"""Clocks. The engine only asks a :class:`engine.ports.Clock`; the wall clock lives in adapters."""

from __future__ import annotations

from engine.errors import InvalidInput


class ReplayClock:
    """Event-time clock: time is whatever the last processed event said, and never goes back.

    Replay and backtest use it, which is why the same input always gives the same output.
    """

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance_to(self, ts_ms: int) -> None:
        """Move time forward to ``ts_ms``; earlier times are ignored (late events don't rewind time)."""
        if ts_ms > self._now:
            self._now = ts_ms


class ManualClock(ReplayClock):
    """A clock tests set explicitly, including backwards moves being refused loudly."""

    def set(self, ts_ms: int) -> None:
        if ts_ms < self._now:
            raise InvalidInput(f"clock cannot go back from {self._now} to {ts_ms}")
        self._now = ts_ms
