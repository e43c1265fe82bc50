"""Log lines on stderr: ``text`` (the default) or ``json`` (``--log-format json``: one JSON object per line)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from engine.errors import InvalidInput

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_state: dict[str, Any] = {"format": "text", "level": logging.INFO}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and ``exc`` when the
    record carries a traceback (kept inside the one line)."""

    converter = time.gmtime  # type: ignore[assignment]  # stub reads gmtime as taking no argument; UTC stamps

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, log_format: str | None = None, level: int | None = None) -> None:
    """(Re)configure the root logger; None keeps what was chosen before (the CLI calls this once per option)."""
    if log_format is not None:
        if log_format not in FORMATS:
            raise InvalidInput(f"--log-format must be text or json, not {log_format!r}")
        _state["format"] = log_format
    if level is not None:
        _state["level"] = level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if _state["format"] == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=_state["level"], handlers=[handler], force=True)


def log_format() -> str:
    """The chosen format; a framework that installs its own handlers (faust) keeps ours when it is ``json``."""
    return str(_state["format"])
