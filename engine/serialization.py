"""orjson wire formats: the CLI's JSONL contracts and the versioned Kafka payloads."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import orjson

from engine.errors import InvalidInput
from engine.events import (
    FEATURE_NAMES,
    Bar,
    BookTop,
    CompositeSignal,
    DeadLetter,
    Features,
    Interval,
    NewsItem,
    SentimentScore,
    Side,
    Signal,
    Ticker,
    Trade,
)

SCHEMA_VERSION = 1

_TYPES: dict[str, type[msgspec.Struct]] = {
    cls.__name__: cls
    for cls in (Trade, Bar, Ticker, BookTop, NewsItem, SentimentScore, Features, CompositeSignal, DeadLetter)
}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def features_record(features: Features) -> dict[str, Any]:
    """``--features-out`` line: symbol, interval, start (epoch ms), close, then the ten features."""
    record: dict[str, Any] = {
        "symbol": features.symbol,
        "interval": features.interval.value,
        "start": features.start,
        "close": features.close,
    }
    for name in FEATURE_NAMES:
        record[name] = _finite(getattr(features, name))
    return record


def signal_record(signal: CompositeSignal) -> dict[str, Any]:
    """``--signals-out`` line (contract)."""
    features = signal.features
    return {
        "symbol": signal.symbol,
        "ts_event": signal.ts_event,
        "ts_init": signal.ts_init,
        "signal": signal.signal.value,
        "confidence": signal.confidence,
        "scores": signal.scores,
        "num_sources": signal.num_sources,
        "actionable": signal.actionable,
        "features": {n: _finite(getattr(features, n)) for n in FEATURE_NAMES} if features else {},
    }


def dumps_line(record: dict[str, Any]) -> bytes:
    """One JSONL line, keys in insertion order so output is byte-stable."""
    return orjson.dumps(record) + b"\n"


def encode_event(event: msgspec.Struct) -> bytes:
    """Versioned payload for a Kafka topic: ``{"v":1,"type":"Bar",...fields}``."""
    body = msgspec.to_builtins(event)
    return orjson.dumps({"v": SCHEMA_VERSION, "type": type(event).__name__, **body})


def decode_event(payload: bytes | str) -> msgspec.Struct:
    """Inverse of :func:`encode_event`; raises :class:`InvalidInput` with the reason on anything off."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", raw=payload) from None
    if not isinstance(data, dict):
        raise InvalidInput("payload is not a JSON object", raw=payload)
    version = data.pop("v", None)
    if version != SCHEMA_VERSION:
        raise InvalidInput(f"unsupported schema version {version!r}", raw=payload)
    type_name = data.pop("type", None)
    cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise InvalidInput(f"unknown event type {type_name!r}", raw=payload)
    try:
        return msgspec.convert(data, cls, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid {type_name}: {exc}", raw=payload) from None


def _dec_hook(kind: type, obj: object) -> object:
    for enum in (Interval, Side, Signal):
        if kind is enum:
            return enum(str(obj))
    raise NotImplementedError(kind)
