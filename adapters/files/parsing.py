"""Recording lines and CSV rows -> engine events. Units and timestamps are converted only here.

Recording line (JSONL, one object per line, in receive order)::

    {"ts_init": 1717171717000, "source": "bybit", "data": {...raw Bybit v5 public frame...}}
    {"ts_init": 1717171717500, "source": "news",  "data": {"id", "source", "published", "headline",
                                                           "body", "symbols", "tags", "url"}}
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.bars import closed_bar
from engine.codecs import FrameDecoder, venue_codec
from engine.errors import InvalidInput
from engine.events import Bar, Event, Interval, NewsItem
from engine.timestamps import to_epoch_ms

NEWS_SOURCE = "news"


def parse_recording_line(line: str, decoders: dict[str, FrameDecoder]) -> list[Event]:
    """One recording line -> its events; raises :class:`InvalidInput` with the reason.

    A venue's frames (``source`` = the venue, e.g. ``bybit``) go through that venue's registered codec
    (:mod:`engine.codecs`), one stateful decoder per venue kept in ``decoders``: the same decoder the
    live source uses, so order books and ticker deltas replay exactly as they were applied live.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidInput("recording line is not a JSON object")
    ts_init = record.get("ts_init")
    if not isinstance(ts_init, int) or isinstance(ts_init, bool):
        raise InvalidInput(f"recording line has no integer ts_init (epoch ms): {ts_init!r}")
    source = record.get("source")
    data = record.get("data")
    if source == NEWS_SOURCE:
        return [news_from_record(data, ts_init)]
    if not isinstance(source, str):
        raise InvalidInput(f"unknown recording source {source!r}")
    decoder = decoders.get(source)
    if decoder is None:
        try:
            decoder = decoders[source] = venue_codec(source).decoder()
        except InvalidInput as exc:
            raise InvalidInput(f"unknown recording source {source!r}: {exc.reason}; or 'news'") from None
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{source} data is not a JSON object")
    return decoder.decode(data, ts_init)


def news_from_record(data: object, ts_init: int) -> NewsItem:
    """A recorded news object -> :class:`NewsItem`."""
    if not isinstance(data, Mapping):
        raise InvalidInput("news data is not a JSON object")
    headline = data.get("headline")
    if not isinstance(headline, str) or not headline.strip():
        raise InvalidInput("news item has no headline")
    if "published" not in data:
        raise InvalidInput("news item has no published time")
    published = to_epoch_ms(data["published"])
    body = data.get("body") or ""
    url = data.get("url") or ""
    news_id = data.get("id") or url or _digest(headline, published)
    return NewsItem(
        id=str(news_id),
        source=str(data.get("source") or "recording"),
        headline=headline.strip(),
        body=str(body).strip(),
        symbols=_str_tuple(data.get("symbols"), "symbols"),
        tags=_str_tuple(data.get("tags"), "tags"),
        url=str(url),
        ts_event=published,
        ts_init=ts_init,
    )


def news_record(item: NewsItem) -> dict[str, Any]:
    """Inverse of :func:`news_from_record` (the ``data`` of a news recording line)."""
    return {
        "id": item.id,
        "source": item.source,
        "published": item.ts_event,
        "headline": item.headline,
        "body": item.body,
        "symbols": list(item.symbols),
        "tags": list(item.tags),
        "url": item.url,
    }


def _str_tuple(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"news {what} must be a list of strings")
    return tuple(value)


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def _price(row: Mapping[str, str], column: str) -> float:
    raw = row.get(column)
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        raise InvalidInput(f"non-numeric {column} {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"missing or non-finite {column} {raw!r}")
    return value


def bar_from_kline_row(row: Mapping[str, str], symbol: str, interval: Interval) -> Bar:
    """A ``timestamp|start,open,high,low,close,volume`` row -> a closed :class:`Bar`.

    ``ts_event`` and ``ts_init`` are the bar's close time: that is when a live engine would have
    received the confirmed kline.
    """
    stamp = row.get("timestamp") if row.get("timestamp") not in (None, "") else row.get("start")
    if stamp in (None, ""):
        raise InvalidInput("row has no timestamp/start")
    start = to_epoch_ms(stamp)
    open_, high, low, close = (_price(row, c) for c in ("open", "high", "low", "close"))
    return closed_bar(symbol, interval, start, (open_, high, low, close, _price(row, "volume")))


def news_from_csv_row(row: Mapping[str, str], date_format: str) -> NewsItem:
    """A row of the cryptonews.csv layout (``date;sentiment;source;subject;text;title;url``)."""
    title = (row.get("title") or "").strip()
    if not title:
        raise InvalidInput("news row has no title")
    raw_date = (row.get("date") or "").strip()
    try:
        published_at = datetime.strptime(raw_date, date_format).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"unparseable news date {raw_date!r} (expected {date_format})") from None
    published = int(published_at.timestamp() * 1000)
    url = (row.get("url") or "").strip()
    subject = (row.get("subject") or "").strip()
    return NewsItem(
        id=url or _digest(title, published),
        source=(row.get("source") or "csv").strip(),
        headline=title,
        body=(row.get("text") or "").strip(),
        symbols=(),
        tags=(subject,) if subject else (),
        url=url,
        ts_event=published,
        ts_init=published,
    )
