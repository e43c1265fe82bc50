"""Timestamps of outside data, as the engine counts them: integer epoch milliseconds, UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from engine.errors import InvalidInput


def to_epoch_ms(value: object) -> int:
    """Epoch ms from an int, a string of digits, an ISO-8601 string or an aware datetime."""
    if isinstance(value, bool):
        raise InvalidInput(f"not a timestamp: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"not an epoch-ms or ISO-8601 timestamp: {value!r}") from None
    else:
        raise InvalidInput(f"not a timestamp: {value!r}")
    if moment.tzinfo is None:
        # Exports (Bybit klines among them) are UTC; a naive time is read as UTC rather than local time.
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
