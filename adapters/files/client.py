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
    number = 0
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                stripped = line.rstrip("\r\n")
                if stripped.strip():
                    yield number, stripped
        except EOFError:
            raise TruncatedFile(
                f"{path} ends mid-stream after line {number}: a gzip file without its end marker (its writer was "
                "stopped before closing it); every line before the cut was read", number
            ) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise InvalidInput(f"{path} is not a readable gzip file: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path} line {number + 1} is not UTF-8 text: {exc}") from None


def open_binary_writer(path: Path) -> IO[bytes]:
    """A binary writer, gzip-compressed when the name ends in ``.gz``; parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps gzip output byte-identical across runs.
        return gzip.GzipFile(filename=str(path), mode="wb", mtime=0)  # type: ignore[return-value]  # GzipFile is a binary IO
    return path.open("wb")
