"""orjson wire formats: the CLI's JSONL contracts, the v1 signal record and the versioned Kafka payloads."""

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
"""Version of the :func:`encode_event` payloads, ``{"v":1,"type":...}`` (every Kafka topic but signals)."""

SIGNAL_SCHEMA_VERSION = 1
"""Version of :func:`signal_record`, the one signal shape; see ``schemas/signal.v1.schema.json``."""

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
    """The one signal record (schema v1, ``schemas/signal.v1.schema.json``) on every sink: ``--signals-out``,
    stdout and Kafka ``signals.composite``. Keys in this order, so the output is byte-stable.

    ``features`` is ``None`` while the symbol has none yet; non-finite feature values become ``None``.
    """
    features = signal.features
    return {
        "v": SIGNAL_SCHEMA_VERSION,
        "id": signal.id,
        "symbol": signal.symbol,
        "ts_event": signal.ts_event,
        "ts_init": signal.ts_init,
        "cause": signal.cause,
        "signal": signal.signal.value,
        "confidence": signal.confidence,
        "scores": signal.scores,
        "num_sources": signal.num_sources,
        "actionable": signal.actionable,
        "market_data": signal.market_data,
        "features": None if features is None else {n: _finite(getattr(features, n)) for n in FEATURE_NAMES},
    }


_SIGNAL_KEYS = frozenset(
    ("v", "id", "symbol", "ts_event", "ts_init", "cause", "signal", "confidence", "scores", "num_sources",
     "actionable", "market_data", "features")
)
# Written by every current writer; records from before it was added are still v1 signals.
_OPTIONAL_SIGNAL_KEYS = frozenset(("market_data",))
_SIGNAL_LABELS = frozenset(s.value for s in Signal)


def decode_signal(payload: bytes | str) -> dict[str, Any]:
    """Parse one signal record (a JSONL line or a ``signals.composite`` value) into its dict.

    A cheap structural check, not the full JSON Schema: raises :class:`InvalidInput` with the reason when the
    payload is not JSON, not an object, not ``v`` == :data:`SIGNAL_SCHEMA_VERSION`, lacks or adds keys, or
    carries an unknown signal label.
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", raw=payload) from None
    if not isinstance(data, dict):
        raise InvalidInput("signal is not a JSON object", raw=payload)
    version = data.get("v")
    if version != SIGNAL_SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidInput(f"unsupported signal schema version {version!r}", raw=payload)
    keys = data.keys()
    if keys != _SIGNAL_KEYS and keys | _OPTIONAL_SIGNAL_KEYS != _SIGNAL_KEYS:
        missing, extra = sorted(_SIGNAL_KEYS - _OPTIONAL_SIGNAL_KEYS - keys), sorted(keys - _SIGNAL_KEYS)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise InvalidInput(f"not a v{SIGNAL_SCHEMA_VERSION} signal: {'; '.join(parts)}", raw=payload)
    label = data["signal"]
    if not isinstance(label, str) or label not in _SIGNAL_LABELS:
        raise InvalidInput(f"unknown signal label {label!r}", raw=payload)
    scores, features = data["scores"], data["features"]
    if not isinstance(scores, dict) or scores.keys() != _SIGNAL_LABELS:
        raise InvalidInput(f"scores must have exactly SELL, HOLD, BUY: {scores!r}", raw=payload)
    if not isinstance(data.get("market_data", True), bool):
        raise InvalidInput(f"market_data must be a boolean: {data['market_data']!r}", raw=payload)
    if features is not None and not isinstance(features, dict):
        raise InvalidInput(f"features must be null or an object, not {type(features).__name__}", raw=payload)
    return data


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
