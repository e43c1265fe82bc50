"""The single retry helper: acts on :class:`TransientError` only, with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's 'full jitter')."""

    initial_s: float = 0.2
    maximum_s: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        # The exponent is capped: factor**1024 overflows a float, and "retry forever" loops reach it.
        cap = min(self.maximum_s, self.initial_s * self.factor ** min(attempt, 64))
        return (rng or random).uniform(0, cap)


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = 5,
    backoff: Backoff | None = None,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``operation``; on :class:`TransientError` wait and retry. ``attempts=None`` retries forever.

    Any other exception propagates at once: retrying a bug or bad input only hides it.
    """
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        try:
            return await operation()
        except TransientError as exc:
            if attempts is not None and attempt + 1 >= attempts:
                raise
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await sleep(delay)
            attempt += 1
