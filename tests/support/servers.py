"""Real local servers that speak the external protocols, as async context managers for fixtures.

* :func:`bybit_ws_server`   - Bybit v5 public websocket (:mod:`testkit.bybit_ws`);
* :func:`rss_http_server`   - an RSS/Atom feed over HTTP with ETag/Last-Modified (:mod:`testkit.rss_http`);
* :func:`bybit_rest_server` - Bybit's v5 REST market endpoints ccxt calls (:mod:`testkit.bybit_rest`).

Plus :func:`fast_bybit_settings` (short pings and backoffs, so fault tests take seconds) and
:class:`CollectingDeadLetters`, a dead-letter sink that keeps what it receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from adapters.bybit.config import BybitSettings
from engine.events import DeadLetter
from testkit.bybit_ws import BybitTestServer, FeedEntry

if TYPE_CHECKING:
    from testkit.bybit_rest import BybitRestServer
    from testkit.rss_http import FeedItem, RssTestServer


class CollectingDeadLetters:
    """A :class:`engine.ports.DeadLetterSink` that keeps every record."""

    def __init__(self) -> None:
        self.records: list[DeadLetter] = []

    @property
    def count(self) -> int:
        return len(self.records)

    async def publish(self, record: DeadLetter) -> None:
        self.records.append(record)

    def reasons(self) -> list[str]:
        return [r.reason for r in self.records]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, poll: float = 0.01) -> None:  # noqa: ASYNC109 - a test helper with a deadline reads best this way
    """Poll ``predicate`` until it holds; fail with TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state owned by other tasks, which set no event
            await asyncio.sleep(poll)


def fast_bybit_settings(url: str, **overrides: Any) -> BybitSettings:
    """Settings for tests: the given server URL, pings every 0.2 s, reconnects within ~0.2 s."""
    values: dict[str, Any] = {
        "ws_url": url,
        "symbols": ("BTCUSDT",),
        "ping_interval_s": 0.2,
        "pong_timeout_s": 0.5,
        "open_timeout_s": 2.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "trades": False,
        "tickers": False,
        "orderbook_depth": 0,
    }
    values.update(overrides)
    return BybitSettings(**values)


@asynccontextmanager
async def bybit_ws_server(
    frames: Iterable[FeedEntry | dict[str, Any]] = (), **kwargs: Any
) -> AsyncIterator[BybitTestServer]:
    """A started :class:`BybitTestServer` on a free port; ``server.url`` is its address."""
    async with BybitTestServer(frames, **kwargs) as server:
        yield server


@asynccontextmanager
async def rss_http_server(items: Iterable[FeedItem] = (), **kwargs: Any) -> AsyncIterator[RssTestServer]:
    """A started :class:`RssTestServer` on a free port; ``server.url`` is the feed's address."""
    from testkit.rss_http import RssTestServer  # aiohttp/ccxt load only when needed

    async with RssTestServer(items, **kwargs) as server:
        yield server


@asynccontextmanager
async def bybit_rest_server(**kwargs: Any) -> AsyncIterator[BybitRestServer]:
    """A started :class:`BybitRestServer`; point ccxt at ``server.url``."""
    from testkit.bybit_rest import BybitRestServer  # aiohttp/ccxt load only when needed

    async with BybitRestServer(**kwargs) as server:
        yield server
