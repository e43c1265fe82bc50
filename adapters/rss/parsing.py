"""Feed documents -> :class:`engine.events.NewsItem`. The only place feed dates become epoch ms.

* ``id`` is the entry's guid (RSS) / id (Atom), else its link;
* ``ts_event`` is the published time (or, failing that, the updated time), in UTC epoch ms;
* an entry without a usable title, id/link or date is :class:`InvalidInput`, reported per entry so the
  rest of the feed still parses.
"""

from __future__ import annotations

import calendar
import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import feedparser
import orjson

from engine.errors import InvalidInput
from engine.events import NewsItem

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _text(value: object) -> str:
    """Feed text without markup or runs of whitespace."""
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


_GLOBAL_ID = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|urn:|tag:)", re.IGNORECASE)


def entry_key(entry: Mapping[str, Any], feed_url: str = "") -> str | None:
    """The de-duplication key: guid/id, else link.

    A guid that is not a URI (``<guid isPermaLink="false">1001</guid>``) is only unique within its feed,
    so it is qualified with the feed's URL; otherwise two feeds' item 1001 would be one story.
    """
    for key in ("id", "link"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            value = value.strip()
            return value if _GLOBAL_ID.match(value) or not feed_url else f"{feed_url}#{value}"
    return None


def _published_ms(entry: Mapping[str, Any]) -> int | None:
    for key in ("published_parsed", "updated_parsed"):
        # dict.get skips FeedParserDict's deprecated updated->published aliasing.
        parsed = dict.get(entry, key)  # type: ignore[call-overload]  # FeedParserDict is a dict
        if parsed is not None:
            # feedparser normalises dates to UTC struct_time; timegm reads them as UTC.
            return calendar.timegm(parsed) * 1000
    return None


def parse_entry(entry: Mapping[str, Any], source: str, ts_init: int, feed_url: str = "") -> NewsItem:
    """One feed entry as a NewsItem; raises InvalidInput with the reason when it cannot be one."""
    key = entry_key(entry, feed_url)
    title = _text(entry.get("title"))
    if key is None:
        raise InvalidInput("feed entry has neither guid/id nor link", raw=_raw(entry))
    if not title:
        raise InvalidInput(f"feed entry {key!r} has no title", raw=_raw(entry))
    published = _published_ms(entry)
    if published is None:
        stated = dict.get(entry, "published") or dict.get(entry, "updated")  # type: ignore[call-overload]
        why = f"unparseable date {stated!r}" if stated else "no published or updated date"
        raise InvalidInput(f"feed entry {key!r}: {why}", raw=_raw(entry))
    tags = tuple(
        term.strip() for tag in entry.get("tags") or () if isinstance(term := tag.get("term"), str) and term.strip()
    )
    body = _text(entry.get("summary"))
    return NewsItem(
        id=key,
        source=source,
        headline=title,
        body="" if body == title else body,
        symbols=(),  # the engine's SymbolMapper assigns symbols from text and tags
        tags=tags,
        url=entry.get("link", "") if isinstance(entry.get("link"), str) else "",
        ts_event=published,
        ts_init=ts_init,
    )


def parse_feed(body: bytes, feed_url: str, ts_init: int) -> list[NewsItem | InvalidInput]:
    """Every entry of one feed document, as an item or as the reason it is not one, in feed order.

    Raises:
        InvalidInput: The document is not a feed at all: malformed XML with no entries, or a well-formed
            document that is no RSS/Atom (a login page, an empty body).
    """
    parsed = feedparser.parse(body)
    if parsed.get("bozo") and not parsed.entries:
        raise InvalidInput(f"feed {feed_url}: not a parseable feed: {parsed.get('bozo_exception')}", raw=feed_url)
    if not parsed.get("version") and not parsed.entries:
        raise InvalidInput(f"feed {feed_url}: the answer is not RSS or Atom ({len(body)} bytes)", raw=feed_url)
    source = _text(parsed.feed.get("title")) or urlsplit(feed_url).netloc or feed_url
    out: list[NewsItem | InvalidInput] = []
    for entry in parsed.entries:
        try:
            out.append(parse_entry(entry, source, ts_init, feed_url))
        except InvalidInput as exc:
            out.append(exc)
    return out


def _raw(entry: Mapping[str, Any]) -> str:
    """The entry's own fields as JSON, for the dead-letter record."""
    fields = {k: entry.get(k) for k in ("id", "link", "title", "published", "updated", "summary") if k in entry}
    return orjson.dumps(fields, default=str).decode()
