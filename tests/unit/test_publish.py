"""`run --kafka`'s merge of live sources: a stop is honoured even while the sources outpace the publisher."""

from __future__ import annotations

import asyncio

from sigstream.modes.run import merged_arrivals


class EndlessSource:
    def __init__(self) -> None:
        self.closed = False

    async def received(self):  # type: ignore[no-untyped-def]
        n = 0
        while not self.closed:
            n += 1
            yield ("tick", n)
            await asyncio.sleep(0)

    async def close(self) -> None:
        self.closed = True


async def test_stop_is_honoured_with_a_full_queue_and_the_backlog_is_drained() -> None:
    queue: asyncio.Queue = asyncio.Queue(100)
    stop = asyncio.Event()
    sources = [EndlessSource(), EndlessSource()]
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _ in merged_arrivals(queue, sources, [], stop):  # type: ignore[arg-type]
            got += 1
            if got == 10:
                await asyncio.sleep(0.05)  # the publisher is slow: the queue fills up
                stop.set()

    await asyncio.wait_for(consume(), timeout=10)
    assert all(s.closed for s in sources)
    assert queue.empty()
    assert got <= 10 + 1 + queue.maxsize + len(sources)  # the backlog at stop, and nothing after it
