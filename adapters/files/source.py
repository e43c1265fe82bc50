"""File sources for replay and backtest: recordings, kline CSVs and news CSVs, merged in time order."""

from __future__ import annotations

import csv
import functools
import heapq
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import orjson

from adapters.files.client import TruncatedFile, numbered_lines, text_lines
from adapters.files.config import FilesSettings
from adapters.files.parsing import bar_from_kline_row, news_from_csv_row, parse_recording_line
from engine.bars import bar_order_error
from engine.codecs import FrameDecoder, venue_codec
from engine.errors import InvalidInput
from engine.events import Bar, DeadLetter, Event, Interval, NewsItem
from engine.runtime import RuntimeItem
from engine.timestamps import to_epoch_ms

_INTERVAL_BY_MS = {i.ms: i for i in Interval}
_SYMBOL_FROM_NAME = re.compile(r"^([A-Za-z0-9]+?)(?:_|-|\.|$)")


class FileSource:
    """Base for file sources: iterate items in the file's time order; DeadLetters for bad lines."""

    path: Path

    def items(self) -> Iterator[RuntimeItem]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def events(self) -> AsyncIterator[Event]:
        """The TickSource/NewsSource port: events only (dead letters are in :meth:`items`)."""
        for item in self.items():
            if not isinstance(item, DeadLetter):
                yield item

    async def close(self) -> None:
        return None

    def _dead(self, exc: InvalidInput, raw: str, line: int | None, ts_init: int) -> DeadLetter:
        return DeadLetter(exc.reason, str(self.path), raw[:2000], line, ts_init)


class RecordingSource(FileSource):
    """JSONL(.gz) recording of Bybit v5 frames and news items, each with its receive time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truncated: TruncatedFile | None = None  # set when items() met the end of a never-closed gzip file

    @functools.cached_property
    def interval(self) -> Interval | None:
        """The interval of the first kline frame in the first 10,000 lines, as its venue's codec reads it
        (so a replay of a 5m recording does not default to 1m and use no bar)."""
        try:
            for number, line in numbered_lines(self.path):
                if number > 10_000:
                    break
                interval = _kline_interval(line)
                if interval is not None:
                    return interval
        except TruncatedFile:
            return None  # items() reports the cut
        return None

    def items(self) -> Iterator[RuntimeItem]:
        last_ts = 0
        decoders: dict[str, FrameDecoder] = {}
        try:
            for number, line in numbered_lines(self.path):
                try:
                    parsed = parse_recording_line(line, decoders)
                except InvalidInput as exc:
                    # The line's own receive time when it still has one, so the dead letter sorts where it was.
                    yield self._dead(exc, line, number, _line_ts_init(line, last_ts))
                    continue
                for item in parsed:
                    last_ts = item.ts_init
                    yield item  # type: ignore[misc]  # decoder yields market events and news only
        except TruncatedFile as cut:
            # A recording whose writer was killed: replay what is there, and say where it was cut.
            self.truncated = cut
            yield self._dead(cut, "", cut.last_line + 1, last_ts)


class KlineCsvSource(FileSource):
    """``timestamp|start,open,high,low,close,volume`` CSV; timestamps ISO-8601 or epoch ms."""

    def __init__(self, path: Path, symbol: str | None = None, interval: Interval | None = None) -> None:
        self.path = path
        self.symbol = (symbol or symbol_from_filename(path)).upper()
        self.interval = interval or infer_interval(path)
        if interval is not None:
            # A stated interval that contradicts the rows would relabel 1m bars as overlapping 5m bars.
            try:
                own = infer_interval(path)
            except InvalidInput:
                own = interval  # too few rows to tell
            if own != interval:
                raise InvalidInput(
                    f"{path.name} holds {own.value} bars but --interval is {interval.value}; "
                    f"pass --interval {own.value}"
                )

    def items(self) -> Iterator[RuntimeItem]:
        last_start: int | None = None
        reader = csv.DictReader(text_lines(self.path))
        _require_columns(self.path, reader.fieldnames, ("open", "high", "low", "close", "volume"))
        for number, row in enumerate(reader, start=2):
            try:
                bar = bar_from_kline_row(row, self.symbol, self.interval)
                if (order_error := bar_order_error(bar, last_start)) is not None:
                    raise order_error
            except InvalidInput as exc:
                # Stamped like a bar (at its close) when the row's time parses, else at the last bar's close.
                ts = _row_close_ms(row, self.interval, last_start)
                yield self._dead(exc, ",".join(str(v) for v in row.values()), number, ts)
                continue
            last_start = bar.start
            yield bar

    def bars(self) -> list[Bar]:
        """Just the bars (backtests check the dead letters separately)."""
        return [b for b in self.items() if isinstance(b, Bar)]


class NewsCsvSource(FileSource):
    """News CSV in the cryptonews.csv layout (``;``-separated), re-ordered by publish time."""

    def __init__(self, path: Path, settings: FilesSettings | None = None) -> None:
        self.path = path
        self.settings = settings or FilesSettings()

    def items(self) -> Iterator[RuntimeItem]:
        news: list[NewsItem] = []
        dead: list[DeadLetter] = []
        reader = csv.DictReader(text_lines(self.path), delimiter=";")
        _require_columns(self.path, reader.fieldnames, ("date", "title"))
        for number, row in enumerate(reader, start=2):
            try:
                news.append(news_from_csv_row(row, self.settings.news_date_format))
            except InvalidInput as exc:
                # Unparseable dates sort first (0); anything else at its publish time, like the news.
                ts = _news_row_ms(row, self.settings.news_date_format)
                dead.append(self._dead(exc, ";".join(str(v) for v in row.values()), number, ts))
        # The file is newest-first; a stable sort keeps same-minute items in file order. Dead letters sort
        # in by their own time (0 when unparseable, so first): the stream must stay in time order for
        # merge_in_time_order, or a late-dated bad row would hold back every news item before it.
        items: list[NewsItem | DeadLetter] = [*dead, *news]
        yield from sorted(items, key=lambda item: item.ts_event if isinstance(item, NewsItem) else item.ts_init)


def _kline_interval(line: str) -> Interval | None:
    if '"kline' not in line:  # cheap: most lines are trades, tickers and books
        return None
    try:
        record = orjson.loads(line)
        data, source = record["data"], record["source"]
        return venue_codec(source).interval(data) if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidInput):
        return None


def _line_ts_init(line: str, fallback: int) -> int:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return fallback
    ts = record.get("ts_init") if isinstance(record, dict) else None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else fallback


def _row_close_ms(row: Mapping[str, str | None], interval: Interval, last_start: int | None) -> int:
    try:
        return to_epoch_ms(row.get("timestamp") or row.get("start")) + interval.ms
    except InvalidInput:
        return last_start + interval.ms if last_start is not None else 0


def _news_row_ms(row: Mapping[str, str | None], date_format: str) -> int:
    try:
        published = datetime.strptime((row.get("date") or "").strip(), date_format).replace(tzinfo=UTC)
    except ValueError:
        return 0
    return int(published.timestamp() * 1000)


def _require_columns(path: Path, header: Iterable[str] | None, needed: tuple[str, ...]) -> None:
    present = set(header or ())
    missing = [c for c in needed if c not in present]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}; header is {sorted(present)}")


def symbol_from_filename(path: Path) -> str:
    match = _SYMBOL_FROM_NAME.match(path.name)
    if not match:
        raise InvalidInput(f"cannot tell the symbol from {path.name}; pass --symbol")
    return match.group(1).upper()


QUOTE_CURRENCIES = ("USDT", "USDC", "USD")


def pair_from_filename(path: Path) -> str | None:
    """The trading pair a file name states (``ETHUSDT_1m.csv`` -> ETHUSDT), or None (``prices.csv``)."""
    match = _SYMBOL_FROM_NAME.match(path.name)
    named = match.group(1).upper() if match else ""
    return named if named.endswith(QUOTE_CURRENCIES) else None


def infer_interval(path: Path) -> Interval:
    """The bar interval from the smallest gap between the first rows' timestamps."""
    starts: list[int] = []
    for row in csv.DictReader(text_lines(path)):
        stamp = row.get("timestamp") or row.get("start")
        try:
            starts.append(to_epoch_ms(stamp))
        except InvalidInput:
            continue
        if len(starts) >= 50:
            break
    gaps = [b - a for a, b in pairwise(starts) if b > a]
    if not gaps or min(gaps) not in _INTERVAL_BY_MS:
        raise InvalidInput(f"cannot infer the bar interval of {path}; pass --interval")
    return _INTERVAL_BY_MS[min(gaps)]


def detect_source(
    path: Path, *, symbol: str | None = None, interval: Interval | None = None,
    settings: FilesSettings | None = None,
) -> FileSource:
    """Pick the source for a path by its name and header."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json.gz")):
        return RecordingSource(path)
    if name.endswith((".csv", ".csv.gz")):
        header = next(text_lines(path), "")
        if ";" in header and "title" in header:
            return NewsCsvSource(path, settings)
        if "open" in header and "close" in header:
            return KlineCsvSource(path, symbol, interval)
        raise InvalidInput(f"{path}: CSV header {header.strip()!r} is neither klines nor news")
    raise InvalidInput(f"{path}: unsupported input (expected .jsonl[.gz] recording or .csv)")


def merge_in_time_order(sources: Iterable[FileSource]) -> Iterator[RuntimeItem]:
    """Merge sources by receive time (ts_init); ties keep the order the sources were given in."""
    def keyed(index: int, source: FileSource) -> Iterator[tuple[int, int, int, RuntimeItem]]:
        # A function, not a nested generator expression: each stream must keep its own index.
        for seq, item in enumerate(source.items()):
            yield item.ts_init, index, seq, item

    streams = [keyed(index, source) for index, source in enumerate(sources)]
    for _, _, _, item in heapq.merge(*streams):
        yield item
