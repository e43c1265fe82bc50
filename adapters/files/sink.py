"""JSONL sinks for features, signals (file and stdout), sentiment and dead letters, and the recording writer."""

from __future__ import annotations

import gzip
import re
import sys
import zlib
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

from adapters.files.client import open_binary_writer, partial_path
from adapters.files.parsing import news_record
from engine.events import CompositeSignal, DeadLetter, Features, NewsItem, Received
from engine.serialization import dumps_line, features_record, signal_record


class _JsonlWriter:
    """A JSONL file; ``staged`` writes ``<path>.partial`` until :meth:`commit` renames it (``open_binary_writer``)."""

    def __init__(self, path: Path, *, staged: bool = False) -> None:
        self.path = path
        self.staged = staged
        self._handle: IO[bytes] = open_binary_writer(path, staged=staged)
        self.count = 0

    @property
    def written_to(self) -> Path:
        """The file on disk now: ``<path>.partial`` while a staged output is not committed."""
        return partial_path(self.path) if self.staged else self.path

    def commit(self) -> Path:
        """The run succeeded: close, and give a staged file its final name. Returns that name."""
        self.close_file()
        if self.staged and partial_path(self.path).exists():
            partial_path(self.path).replace(self.path)
        return self.path

    def discard(self) -> Path | None:
        """The run failed or was interrupted: close; a staged file keeps its ``.partial`` name when it holds lines
        (returned, to be reported) and is removed when it holds none. An unstaged file is left as it is."""
        self.close_file()
        if not self.staged:
            return self.path
        if self.count == 0:
            partial_path(self.path).unlink(missing_ok=True)
            return None
        return partial_path(self.path)

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(dumps_line(record))
        self.count += 1

    def sync(self) -> None:
        """Hand everything written so far to the OS, so a killed process leaves whole lines behind.

        For gzip, a sync flush ends the compressed block: a reader decompresses every line up to here even
        though the file never gets gzip's end marker.
        """
        if isinstance(self._handle, gzip.GzipFile):
            self._handle.flush(zlib.Z_SYNC_FLUSH)
        else:
            self._handle.flush()

    async def flush(self) -> None:
        self._handle.flush()

    async def close(self) -> None:
        self.close_file()

    def close_file(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_file()


class JsonlFeatureSink(_JsonlWriter):
    """``--features-out``: one line per closed bar."""

    async def publish(self, features: Features) -> None:
        self.write(features_record(features))


class JsonlSignalSink(_JsonlWriter):
    """``--signals-out``: one line per composite signal, the v1 :func:`~engine.serialization.signal_record`."""

    async def publish(self, signal: CompositeSignal) -> None:
        self.write(signal_record(signal))


class StdoutSignalSink:
    """Signals as JSON lines (the v1 :func:`~engine.serialization.signal_record`) on stdout, flushed per line,
    for piping into other tools. ``stream`` (a binary stream) replaces stdout, for tests."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._out: IO[bytes] = stream if stream is not None else sys.stdout.buffer
        self.count = 0

    async def publish(self, signal: CompositeSignal) -> None:
        self._out.write(dumps_line(signal_record(signal)))
        self._out.flush()
        self.count += 1

    async def flush(self) -> None:
        self._out.flush()

    async def close(self) -> None:
        self._out.flush()  # stdout stays open for whatever else the process prints


class DeadLetterFile:
    """Dead letters as JSONL ``{"reason","source","line","raw","ts_init"}``; the file is only
    created when the first dead letter arrives, and every one is counted."""

    def __init__(self, path: Path | None, *, staged: bool = False) -> None:
        self.path = path
        self.staged = staged
        self._writer: _JsonlWriter | None = None
        self._count = 0
        self.reasons: dict[str, int] = {}

    @property
    def count(self) -> int:
        return self._count

    async def publish(self, record: DeadLetter) -> None:
        self._count += 1
        # Group by the reason's wording, not its numbers, so the summary stays one line per kind.
        key = re.sub(r"\d+", "N", record.reason.split(":")[0])[:80]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        if self.path is None:
            return
        if self._writer is None:
            self._writer = _JsonlWriter(self.path, staged=self.staged)
        self._writer.write({"reason": record.reason, "source": record.source, "line": record.line,
                            "raw": record.raw, "ts_init": record.ts_init})

    async def flush(self) -> None:
        if self._writer is not None:
            await self._writer.flush()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close_file()

    def commit(self) -> Path | None:
        """See :meth:`_JsonlWriter.commit`; None when no dead letter was written (no file)."""
        return self._writer.commit() if self._writer is not None else None

    def discard(self) -> Path | None:
        """See :meth:`_JsonlWriter.discard`."""
        return self._writer.discard() if self._writer is not None else None


class RecordingWriter:
    """Writes a recording (see :mod:`adapters.files.parsing`); ``.gz`` names are compressed.

    Implements :class:`engine.ports.Recorder` for ``sigstream run --record``: :meth:`record` syncs each
    line to the OS as it is written, so a killed process leaves a file that replays up to its last line.
    """

    def __init__(self, path: Path, *, staged: bool = False) -> None:
        self._writer = _JsonlWriter(path, staged=staged)

    def record(self, item: Received | NewsItem) -> None:
        """One live arrival: a venue message as received (its raw text parsed back to the frame), or news."""
        if isinstance(item, NewsItem):
            self.write_news(item)
        else:
            try:
                frame: object = orjson.loads(item.raw)
            except orjson.JSONDecodeError:
                frame = item.raw  # kept as text: the replay dead-letters it, as the live source did
            self._writer.write({"ts_init": item.ts_init, "source": item.source, "data": frame})
        self._writer.sync()

    def write_frame(self, frame: dict[str, Any], ts_init: int) -> None:
        self._writer.write({"ts_init": ts_init, "source": "bybit", "data": frame})

    def write_news(self, item: NewsItem) -> None:
        self._writer.write({"ts_init": item.ts_init, "source": "news", "data": news_record(item)})

    def write_raw_line(self, line: bytes) -> None:
        """For tests that need a corrupted line in an otherwise valid recording."""
        self._writer._handle.write(line.rstrip(b"\n") + b"\n")

    @property
    def count(self) -> int:
        return self._writer.count

    def close(self) -> None:
        self._writer.close_file()

    def __enter__(self) -> RecordingWriter:
        return self

    def commit(self) -> Path:
        """See :meth:`_JsonlWriter.commit`."""
        return self._writer.commit()

    def discard(self) -> Path | None:
        """See :meth:`_JsonlWriter.discard`."""
        return self._writer.discard()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # A staged recording gets its name only when the block finished; a failure leaves .partial or nothing.
        if exc_type is None:
            self.commit()
        else:
            self.discard()
