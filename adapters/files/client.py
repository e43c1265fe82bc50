"""Opening files: transparent gzip, line numbers for error messages, atomic-enough JSONL writing."""

from __future__ import annotations

import gzip
import io
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


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping blank lines."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.rstrip("\r\n")
            if stripped.strip():
                yield number, stripped


def open_binary_writer(path: Path) -> IO[bytes]:
    """A binary writer, gzip-compressed when the name ends in ``.gz``; parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps gzip output byte-identical across runs.
        return gzip.GzipFile(filename=str(path), mode="wb", mtime=0)  # type: ignore[return-value]  # GzipFile is a binary IO
    return path.open("wb")
