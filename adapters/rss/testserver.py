"""A real local HTTP server publishing an RSS 2.0 feed (``/feed.xml``) and the same items as Atom
(``/atom.xml``), honouring ``If-None-Match`` and ``If-Modified-Since`` with 304 Not Modified.

Items can be added while it runs; each change gives the feed a new ETag and Last-Modified.
``python -m adapters.rss.testserver --help`` serves a feed from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from xml.sax.saxutils import escape

from aiohttp import web

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
    """Serves ``items`` (newest first, as feeds do) on 127.0.0.1; use as an async context manager."""

    def __init__(
        self,
        items: Iterable[FeedItem] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        title: str = "Sigstream Test Wire",
        conditional: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.title = title
        self.conditional = conditional  # False: ignore validators, like servers that always send 200
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

    def rss(self) -> str:
        body = "".join(_rss_item(item) for item in reversed(self.items))
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            f"<title>{escape(self.title)}</title><link>http://{self.host}:{self.port}/</link>"
            f"<description>test feed</description>{body}</channel></rss>"
        )

    def atom(self) -> str:
        body = "".join(_atom_entry(item) for item in reversed(self.items))
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.rss.testserver",
        description="Serve a small crypto-news RSS feed (/feed.xml) and Atom feed (/atom.xml) with ETag/Last-Modified.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument("--add-every", type=float, default=0.0, help="publish a new headline every N seconds")
    return parser


DEMO_HEADLINES = (
    ("Bitcoin rallies as ETF inflows hit a record", ("bitcoin",)),
    ("Ethereum upgrade delayed after testnet bug", ("ethereum",)),
    ("Solana network suffers brief outage", ("solana",)),
    ("Dogecoin surges on social media buzz", ("dogecoin",)),
)


def demo_item(n: int, now: datetime | None = None) -> FeedItem:
    """The ``n``-th headline of the demo feed."""
    title, tags = DEMO_HEADLINES[n % len(DEMO_HEADLINES)]
    published = (now or datetime.now(UTC)).replace(microsecond=0)
    return FeedItem(title, f"https://news.example/{n}", published, guid=f"demo-{n}", categories=tags)


async def _serve(args: argparse.Namespace) -> None:
    async with RssTestServer([demo_item(i) for i in range(len(DEMO_HEADLINES))], host=args.host, port=args.port) as s:
        print(f"rss test server: {s.url} (atom: {s.atom_url})", flush=True)
        n = len(DEMO_HEADLINES)
        while True:
            if args.add_every > 0:
                await asyncio.sleep(args.add_every)
                s.add_items([demo_item(n)])
                n += 1
            else:
                await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
