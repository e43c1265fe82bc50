"""Opening files: transparent gzip, line numbers for error messages, atomic-enough JSONL writing."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from engine.errors import InvalidInput


def open_text(path: Path, mode: str = "r", encoding: str = "utf-8") -> IO[str]:
    """Open a text file, gzip-compressed when its name ends in ``.gz``."""
    if "r" in mode and not path.exists():
        raise InvalidInput(f"no such file: {path}")
    if path.suffix == ".gz":
        binary = gzip.GzipFile(filename=str(path), mode=mode.replace("t", "") + "b")
        return io.TextIOWrapper(binary, encoding=encoding, newline="")
    return path.open(mode, encoding=encoding, newline="")


class TruncatedFile(InvalidInput):
    """A gzip file that ends without its end marker: every line before the cut was read."""

    def __init__(self, reason: str, last_line: int) -> None:
        super().__init__(reason)
        self.last_line = last_line


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping blank lines.

    Raises:
        TruncatedFile: after the last readable line of a gzip file that was never closed (a killed writer).
        InvalidInput: the file is not readable gzip, or not UTF-8.
    """
    for number, line in enumerate(text_lines(path), start=1):
        stripped = line.rstrip("\r\n")
        if stripped.strip():
            yield number, stripped


def text_lines(path: Path) -> Iterator[str]:
    """The file's lines with their endings (what ``csv`` readers take), gzip errors as one-line reasons.

    Raises:
        TruncatedFile: after the last readable line of a gzip file that was never closed (a killed writer).
        InvalidInput: the file is not readable gzip, or not UTF-8.
    """
    number = 0
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):  # noqa: B007 - the count names the cut below
                yield line
        except EOFError:
            raise TruncatedFile(
                f"{path} ends mid-stream after line {number}: a gzip file without its end marker (its writer was "
                "stopped before closing it, or the file was cut); every line before the cut was read", number
            ) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise InvalidInput(f"{path} is not a readable gzip file: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path} line {number + 1} is not UTF-8 text: {exc}") from None


PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """Where a staged output is written until its run succeeds: ``signals.jsonl`` -> ``signals.jsonl.partial``."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def open_binary_writer(path: Path, *, staged: bool = False) -> IO[bytes]:
    """A binary writer, gzip-compressed when the name ends in ``.gz``; parent folders are created.

    ``staged`` writes to :func:`partial_path` instead; the caller renames it to ``path`` once the run succeeded,
    so an interrupted or failed run never leaves a file under the final name that looks complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    target = partial_path(path) if staged else path
    if path.suffix == ".gz":
        raw = target.open("wb")
        # The header names the final file (and mtime=0) so the bytes are the same staged or not, run after run.
        gz = gzip.GzipFile(filename=str(path), mode="wb", fileobj=raw, mtime=0)
        gz.myfileobj = raw  # type: ignore[assignment]  # GzipFile closes the file it "owns" on close(); a passed fileobj would stay open
        return gz  # type: ignore[return-value]  # GzipFile is a binary IO
    return target.open("wb")
