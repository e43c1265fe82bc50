"""A real local HTTP server publishing an RSS 2.0 feed (``/feed.xml``) and the same items as Atom
(``/atom.xml``), honouring ``If-None-Match`` and ``If-Modified-Since`` with 304 Not Modified.

Items can be added while it runs; each change gives the feed a new ETag and Last-Modified.
:func:`load_news_csv` turns a news CSV (cryptonews.csv layout) into feed items, oldest first.
From the command line: ``sigstream testserver rss --help``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

from adapters.files.config import FilesSettings
from adapters.files.source import NewsCsvSource
from engine.events import NewsItem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One feed entry. ``guid``/``published`` may be None to serve deliberately incomplete entries."""

    title: str | None
    link: str | None
    published: datetime | None
    guid: str | None = None
    description: str = ""
    categories: tuple[str, ...] = ()
    raw_date: str | None = None  # served verbatim instead of ``published`` (e.g. an unparseable date)


@dataclass
class RequestLog:
    """What a test can check about the conversation."""

    total: int = 0
    not_modified: int = 0
    conditional: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)


def _rss_item(item: FeedItem) -> str:
    parts = ["<item>"]
    if item.title is not None:
        parts.append(f"<title>{escape(item.title)}</title>")
    if item.link is not None:
        parts.append(f"<link>{escape(item.link)}</link>")
    if item.guid is not None:
        parts.append(f'<guid isPermaLink="false">{escape(item.guid)}</guid>')
    date = item.raw_date if item.raw_date is not None else (format_datetime(item.published) if item.published else None)
    if date is not None:
        parts.append(f"<pubDate>{escape(date)}</pubDate>")
    if item.description:
        parts.append(f"<description>{escape(item.description)}</description>")
    parts.extend(f"<category>{escape(c)}</category>" for c in item.categories)
    parts.append("</item>")
    return "".join(parts)


def _atom_entry(item: FeedItem) -> str:
    parts = ["<entry>"]
    if item.title is not None:
        parts.append(f"<title>{escape(item.title)}</title>")
    if item.link is not None:
        parts.append(f'<link href="{escape(item.link, {chr(34): "&quot;"})}"/>')
    if item.guid is not None:
        parts.append(f"<id>{escape(item.guid)}</id>")
    date = item.raw_date if item.raw_date is not None else (item.published.isoformat() if item.published else None)
    if date is not None:
        parts.append(f"<published>{escape(date)}</published>")
    if item.description:
        parts.append(f"<summary>{escape(item.description)}</summary>")
    parts.extend(f'<category term="{escape(c)}"/>' for c in item.categories)
    parts.append("</entry>")
    return "".join(parts)


class RssTestServer:
    """Serves ``items`` (newest first, as feeds do) on 127.0.0.1; use as an async context manager.

    ``window`` limits the feed to the newest N items, as real feeds do (None: every item).
    """

    def __init__(
        self,
        items: Iterable[FeedItem] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        title: str = "Sigstream Test Wire",
        conditional: bool = True,
        window: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.title = title
        self.conditional = conditional  # False: ignore validators, like servers that always send 200
        self.window = window
        self.items: list[FeedItem] = []
        self.log = RequestLog()
        self.status_override: int | None = None  # answer every request with this status (fault tests)
        # Answer 200 with this text (and the feed's validators) instead of the feed: a captive portal.
        self.body_override: str | None = None
        self._modified = datetime(2024, 1, 1, tzinfo=UTC)
        self._version = 0
        self._runner: web.AppRunner | None = None
        self.add_items(items)

    @property
    def url(self) -> str:
        """The RSS 2.0 feed."""
        return f"http://{self.host}:{self.port}/feed.xml"

    @property
    def atom_url(self) -> str:
        return f"http://{self.host}:{self.port}/atom.xml"

    def add_items(self, items: Iterable[FeedItem]) -> None:
        """Publish more items; the feed's ETag and Last-Modified change."""
        added = list(items)
        if not added:
            return
        self.items.extend(added)
        self._version += 1
        # Last-Modified has one-second resolution; move it forward at least a second per change.
        self._modified = max(datetime.now(UTC).replace(microsecond=0), self._modified + timedelta(seconds=1))

    @property
    def etag(self) -> str:
        digest = hashlib.sha256(f"{self._version}:{len(self.items)}".encode()).hexdigest()[:16]
        return f'"{digest}"'

    def shown(self) -> list[FeedItem]:
        """The items the feed lists now: newest first, at most ``window``."""
        newest_first = self.items[::-1]
        return newest_first if self.window is None else newest_first[: self.window]

    def rss(self) -> str:
        body = "".join(_rss_item(item) for item in self.shown())
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            f"<title>{escape(self.title)}</title><link>http://{self.host}:{self.port}/</link>"
            f"<description>test feed</description>{body}</channel></rss>"
        )

    def atom(self) -> str:
        body = "".join(_atom_entry(item) for item in self.shown())
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{escape(self.title)}</title><id>urn:sigstream:test</id>"
            f"<updated>{self._modified.isoformat()}</updated>{body}</feed>"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/feed.xml", self._feed(self.rss, "application/rss+xml"))
        app.router.add_get("/atom.xml", self._feed(self.atom, "application/atom+xml"))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # With port 0 the OS picks; the runner's addresses say which.
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> RssTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _feed(self, render: Callable[[], str], content_type: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            self.log.total += 1
            self.log.headers.append(dict(request.headers))
            if self.status_override is not None:
                return web.Response(status=self.status_override, text="fault injected")
            if self.body_override is not None:
                return web.Response(text=self.body_override, content_type="text/html", headers=self._validators())
            if self.conditional and self._unchanged(request):
                self.log.not_modified += 1
                return web.Response(status=304, headers=self._validators())
            return web.Response(body=render().encode(), content_type=content_type, headers=self._validators())

        return handler

    def _validators(self) -> dict[str, str]:
        return {"ETag": self.etag, "Last-Modified": format_datetime(self._modified, usegmt=True)}

    def _unchanged(self, request: web.Request) -> bool:
        if_none_match = request.headers.get("If-None-Match")
        if_modified_since = request.headers.get("If-Modified-Since")
        if if_none_match or if_modified_since:
            self.log.conditional += 1
        # RFC 9110 13.1.3: If-None-Match wins over If-Modified-Since when both are present.
        if if_none_match is not None:
            return self.etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
        if if_modified_since is not None:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False
            return self._modified <= since
        return False


def feed_item(news: NewsItem) -> FeedItem:
    """The feed entry that :class:`adapters.rss.source.RssNewsSource` reads back as ``news``."""
    return FeedItem(
        title=news.headline,
        link=news.url or None,
        published=datetime.fromtimestamp(news.ts_event / 1000, UTC),
        guid=news.id,
        description=news.body,
        categories=news.tags,
    )


def load_news_csv(path: Path, settings: FilesSettings | None = None) -> tuple[list[FeedItem], int]:
    """Feed items of a news CSV (cryptonews.csv layout, ``;``-separated), oldest first, and how many
    rows were unusable (no title, unparseable date) and left out."""
    items: list[FeedItem] = []
    bad = 0
    for item in NewsCsvSource(path, settings).items():
        if isinstance(item, NewsItem):
            items.append(feed_item(item))
        else:
            bad += 1
    return items, bad
