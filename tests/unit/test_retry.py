"""The one retry helper: bounded full-jitter backoff, transient errors only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput, TransientError
from engine.retry import Backoff, retry_transient


@given(attempt=st.integers(min_value=0, max_value=100_000))
def test_backoff_delay_stays_within_its_cap_for_any_attempt(attempt: int) -> None:
    # "Retry forever" loops (Redis reconnect, the Bybit socket) reach attempt numbers whose factor**attempt
    # overflows a float; the delay must stay a number in [0, maximum_s] however long the outage lasts.
    backoff = Backoff(initial_s=0.5, maximum_s=30.0, factor=2.0)
    delay = backoff.delay(attempt, random.Random(attempt))
    assert 0.0 <= delay <= 30.0


def test_backoff_cap_grows_by_factor_until_the_maximum() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    backoff = Backoff(initial_s=0.2, maximum_s=1.0, factor=2.0)
    assert [backoff.delay(n, Top()) for n in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


async def test_retry_transient_retries_then_succeeds_and_reports_each_retry() -> None:
    calls, retries, slept = [], [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("down")
        return "ok"

    async def sleep(s: float) -> None:
        slept.append(s)

    result = await retry_transient(
        flaky, attempts=5, on_retry=lambda n, exc, d: retries.append((n, str(exc))), sleep=sleep
    )
    assert result == "ok"
    assert retries == [(0, "down"), (1, "down")]
    assert len(slept) == 2


async def test_retry_transient_gives_up_after_attempts_and_never_retries_bad_input() -> None:
    async def sleep(s: float) -> None:
        return None

    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    with pytest.raises(TransientError):
        await retry_transient(always_down, attempts=3, sleep=sleep)
    assert calls == 3

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise InvalidInput("bad row")

    calls = 0
    with pytest.raises(InvalidInput):
        await retry_transient(bad, attempts=3, sleep=sleep)
    assert calls == 1
