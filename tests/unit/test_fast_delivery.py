"""The inline first step that the worker's consumer uses in front of faust's ``wait_first``."""

from __future__ import annotations

import asyncio

import pytest

from adapters.kafka.fast_delivery import fast_delivery_consumer, first_step


async def _returns(value: int) -> int:
    return value


async def _waits_on(fut: asyncio.Future[int], add: int) -> int:
    return await fut + add


async def test_a_coroutine_that_never_suspends_finishes_inline() -> None:
    assert first_step(_returns(7)) == (True, 7)


async def test_a_suspended_coroutine_continues_where_it_stopped() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done, continuation = first_step(_waits_on(fut, 1))
    assert done is False
    task = asyncio.ensure_future(continuation)
    await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(41)
    assert await task == 42


async def test_an_error_after_the_first_step_reaches_the_awaiter() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done, continuation = first_step(_waits_on(fut, 1))
    assert done is False
    task = asyncio.ensure_future(continuation)
    fut.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        await task


async def test_cancelling_the_continuation_cancels_the_inner_wait() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done, continuation = first_step(_waits_on(fut, 1))
    assert done is False
    task = asyncio.ensure_future(continuation)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fut.cancelled()


class _Flag:
    def __init__(self, is_set: bool = False) -> None:
        self._set = is_set

    def is_set(self) -> bool:
        return self._set


class _BaseConsumer:
    """Stands in for mode's Service.wait_first: records that the slow path ran."""

    def __init__(self, stopped: bool = False) -> None:
        self._stopped = _Flag(stopped)
        self._crashed = _Flag()
        self.slow_calls = 0

    async def wait_first(self, *coros: object, timeout: object = None) -> object:  # noqa: ASYNC109 - mode's signature
        self.slow_calls += 1
        results = [await c for c in coros[:1]]  # type: ignore[misc]
        for other in coros[1:]:
            other.close()  # type: ignore[attr-defined]
        return results


async def _never() -> None:
    await asyncio.Event().wait()


async def test_consumer_takes_the_fast_path_only_when_delivery_does_not_block() -> None:
    consumer = fast_delivery_consumer(_BaseConsumer)()
    result = await consumer.wait_first(_returns(3), _never())
    assert (result.done, result.results, result.stopped) == ([result.done[0]], [3], False)
    assert consumer.slow_calls == 0

    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, 9)
    assert await consumer.wait_first(_waits_on(fut, 1), _never()) == [10]
    assert consumer.slow_calls == 1


async def test_a_stopped_consumer_keeps_fausts_behaviour() -> None:
    consumer = fast_delivery_consumer(_BaseConsumer)(stopped=True)
    assert await consumer.wait_first(_returns(3), _never()) == [3]
    assert consumer.slow_calls == 1
