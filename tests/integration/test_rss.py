"""RssNewsSource against a real local HTTP feed server (conditional GET, de-duplication, bad entries)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.rss.config import RssSettings
from adapters.rss.source import RssNewsSource
from engine.clock import ManualClock
from engine.events import NewsItem
from testkit.rss_http import FeedItem
from tests.support.servers import CollectingDeadLetters, eventually, rss_http_server

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T0_MS = 1_709_294_400_000


def item(n: int, minutes: int, **kwargs: object) -> FeedItem:
    fields: dict[str, object] = {
        "title": f"Bitcoin headline {n}",
        "link": f"https://news.example/{n}",
        "published": T0.replace(minute=minutes),
        "guid": f"urn:news:guid-{n}",
        "description": f"<p>Body <b>{n}</b> &amp; more</p>",
        "categories": ("bitcoin", "markets"),
    }
    fields.update(kwargs)
    return FeedItem(**fields)  # type: ignore[arg-type]


def source_for(url: str, dead: CollectingDeadLetters, **overrides: object) -> RssNewsSource:
    settings = RssSettings(feeds=(url,), poll_interval_s=0.05, attempts=2, backoff_initial_s=0.01, **overrides)
    return RssNewsSource(settings, dead, clock=ManualClock(T0_MS + 99))


async def test_rss_items_become_news_oldest_first_with_published_time() -> None:
    dead = CollectingDeadLetters()
    async with rss_http_server([item(1, 5), item(2, 1)]) as server:
        source = source_for(server.url, dead)
        try:
            news = await source.poll_once()
        finally:
            await source.close()
    assert [n.id for n in news] == ["urn:news:guid-2", "urn:news:guid-1"]
    first = news[0]
    assert first == NewsItem(
        id="urn:news:guid-2",
        source="Sigstream Test Wire",
        headline="Bitcoin headline 2",
        body="Body 2 & more",
        symbols=(),
        tags=("bitcoin", "markets"),
        url="https://news.example/2",
        ts_event=T0_MS + 60_000,
        ts_init=T0_MS + 99,
    )
    assert dead.count == 0


async def test_unchanged_feed_is_answered_304_and_yields_nothing() -> None:
    async with rss_http_server([item(1, 0)]) as server:
        source = source_for(server.url, CollectingDeadLetters())
        try:
            assert len(await source.poll_once()) == 1
            assert await source.poll_once() == []
            assert await source.poll_once() == []
        finally:
            await source.close()
        assert server.log.total == 3
        assert server.log.not_modified == 2
        # The client sent back exactly the validators the server gave it.
        assert server.log.headers[1]["If-None-Match"] == server.etag
        assert "If-Modified-Since" in server.log.headers[1]
    assert source.stats.not_modified == 2


async def test_if_modified_since_alone_gets_304() -> None:
    import aiohttp

    async with rss_http_server([item(1, 0)]) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url) as first:
            last_modified = first.headers["Last-Modified"]
        async with http.get(server.url, headers={"If-Modified-Since": last_modified}) as second:
            assert second.status == 304
        server.add_items([item(2, 1)])
        async with http.get(server.url, headers={"If-Modified-Since": last_modified}) as third:
            assert third.status == 200


async def test_new_items_are_picked_up_and_old_ones_not_repeated() -> None:
    async with rss_http_server([item(1, 0), item(2, 1)]) as server:
        source = source_for(server.url, CollectingDeadLetters())
        try:
            assert [n.id for n in await source.poll_once()] == ["urn:news:guid-1", "urn:news:guid-2"]
            server.add_items([item(3, 2)])
            assert [n.id for n in await source.poll_once()] == ["urn:news:guid-3"]
        finally:
            await source.close()
    assert source.stats.duplicates == 2


async def test_duplicates_are_removed_by_guid_else_link_even_when_server_ignores_validators() -> None:
    no_guid = item(4, 3, guid=None)
    async with rss_http_server([item(1, 0), no_guid], conditional=False) as server:
        source = source_for(server.url, CollectingDeadLetters())
        try:
            first = await source.poll_once()
            server.add_items([item(1, 0, title="Bitcoin headline 1 (updated)")])  # same guid again
            second = await source.poll_once()
        finally:
            await source.close()
        assert server.log.not_modified == 0
    assert [n.id for n in first] == ["urn:news:guid-1", "https://news.example/4"]
    assert second == []


async def test_bad_entries_are_dead_lettered_once_and_good_ones_still_arrive() -> None:
    dead = CollectingDeadLetters()
    entries = [
        item(1, 0),
        item(2, 1, published=None),
        item(3, 2, raw_date="sometime last week"),
        item(4, 3, title=None),
        item(5, 4),
    ]
    async with rss_http_server(entries, conditional=False) as server:
        source = source_for(server.url, dead)
        try:
            news = await source.poll_once()
            again = await source.poll_once()
        finally:
            await source.close()
    assert [n.id for n in news] == ["urn:news:guid-1", "urn:news:guid-5"]
    assert again == []
    assert sorted(dead.reasons()) == [
        "feed entry 'urn:news:guid-2': no published or updated date",
        "feed entry 'urn:news:guid-3': unparseable date 'sometime last week'",
        "feed entry 'urn:news:guid-4' has no title",
    ]
    assert {r.source for r in dead.records} == {"rss"}
    assert any('"link":"https://news.example/2"' in r.raw for r in dead.records)


async def test_atom_feed_parses_like_rss() -> None:
    async with rss_http_server([item(1, 0), item(2, 1)]) as server:
        source = source_for(server.atom_url, CollectingDeadLetters())
        try:
            news = await source.poll_once()
        finally:
            await source.close()
    assert [(n.id, n.ts_event, n.headline, n.tags) for n in news] == [
        ("urn:news:guid-1", T0_MS, "Bitcoin headline 1", ("bitcoin", "markets")),
        ("urn:news:guid-2", T0_MS + 60_000, "Bitcoin headline 2", ("bitcoin", "markets")),
    ]


async def test_server_errors_are_retried_then_skipped_and_404_is_dead_lettered() -> None:
    dead = CollectingDeadLetters()
    async with rss_http_server([item(1, 0)]) as server:
        source = source_for(server.url, dead)
        try:
            server.status_override = 503
            assert await source.poll_once() == []
            assert server.log.total == 2  # both attempts were made
            assert source.stats.failures == 1
            server.status_override = 404
            assert await source.poll_once() == []
            assert dead.reasons() == [f"feed {server.url}: HTTP 404"]
            server.status_override = None
            assert [n.id for n in await source.poll_once()] == ["urn:news:guid-1"]
        finally:
            await source.close()


async def test_events_stream_polls_until_closed() -> None:
    async with rss_http_server([item(1, 0)]) as server:
        source = source_for(server.url, CollectingDeadLetters())
        seen: list[NewsItem] = []

        async def consume() -> None:
            async for news in source.events():
                seen.append(news)

        task = asyncio.create_task(consume())
        await eventually(lambda: len(seen) == 1)
        server.add_items([item(2, 1)])
        await eventually(lambda: len(seen) == 2)
        await source.close()
        await asyncio.wait_for(task, 5)
    assert [n.id for n in seen] == ["urn:news:guid-1", "urn:news:guid-2"]


async def test_the_same_plain_guid_in_two_feeds_is_two_stories() -> None:
    # <guid isPermaLink="false">1001</guid> is only unique within its feed.
    dead = CollectingDeadLetters()
    async with rss_http_server([item(1, 1, guid="1001")]) as a, rss_http_server([item(2, 2, guid="1001")]) as b:
        settings = RssSettings(feeds=(a.url, b.url), poll_interval_s=0.05, attempts=1)
        source = RssNewsSource(settings, dead, clock=ManualClock(T0_MS + 99))
        try:
            news = await source.poll_once()
            again = await source.poll_once()
        finally:
            await source.close()
    assert [n.id for n in news] == [f"{a.url}#1001", f"{b.url}#1001"]
    assert [n.headline for n in news] == ["Bitcoin headline 1", "Bitcoin headline 2"]
    assert again == []
    assert source.stats.duplicates == 0 and dead.count == 0


async def test_a_page_that_is_not_a_feed_is_dead_lettered_and_its_validators_forgotten() -> None:
    dead = CollectingDeadLetters()
    async with rss_http_server([item(1, 1)]) as server:
        source = source_for(server.url, dead)
        try:
            server.body_override = "<html><head><title>Login</title></head><body>sign in</body></html>"
            assert await source.poll_once() == []
            assert dead.count == 1 and "is not RSS or Atom" in dead.records[0].reason
            server.body_override = None
            # No If-None-Match from the broken answer: the feed is fetched in full and its item arrives.
            assert [n.headline for n in await source.poll_once()] == ["Bitcoin headline 1"]
            assert "If-None-Match" not in server.log.headers[-1]
        finally:
            await source.close()
