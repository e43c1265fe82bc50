"""Snapshots of a :class:`engine.pipeline.SignalEngine`'s state, so a worker can stop and continue exactly.

A blob is ``b"SGSE"``, the format version as two big-endian bytes, then the zlib-compressed (level
:data:`ZLIB_LEVEL`) orjson encoding of :meth:`SignalEngine.state`. The same engine state always gives the
same bytes (no wall-clock time, no sorting surprises: mappings keep the engine's insertion order, which
restoring keeps too, since e.g. ``flush_bars`` closes bars in that order).

Floats round-trip bit-exactly: orjson writes the shortest repr that reads back to the same double (``-0.0``
included), and the few non-finite values the engine can hold (an ``inf`` or ``nan`` from an overflowing
return or VWAP sum, which JSON cannot carry) are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"``
(see :func:`encode_float`). Every decoder checks what it reads and raises :class:`InvalidInput`, so a
corrupt or foreign blob is refused, never half-applied: :func:`restore_engine_state` decodes everything
before it changes the engine.

Each stateful class owns its layout (``state()`` and ``from_state()`` / ``restore_state()`` next to its
private fields); this module holds the framing and the checked-value helpers they share. It imports none
of them, so they can import it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from engine.errors import InvalidInput


class SignalEngine(Protocol):
    """What a snapshot needs of :class:`engine.pipeline.SignalEngine` (named here, not imported: the engine's
    classes import this module's helpers)."""

    def state(self) -> dict[str, Any]: ...

    def restore_state(self, state: dict[str, Any]) -> None: ...

STATE_VERSION = 1
"""Version of the engine-state layout. Bump it whenever any ``state()`` layout changes."""

ZLIB_LEVEL = 1
"""zlib level of the payload. 1: 3-4x faster to write than zlib's default 6 on these documents (the id memory
dominates them) for 3-8 % more bytes. Readers accept any level, so changing it needs no version bump."""

_MAGIC = b"SGSE"
_HEADER_LEN = len(_MAGIC) + 2
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# -- the blob ----------------------------------------------------------------------------------------
def engine_state(engine: SignalEngine) -> bytes:
    """Everything ``engine`` needs to continue exactly, as one versioned, deterministic blob.

    Take it between items, after the runtime has scored its pending news (``await runtime.score_pending()``):
    news accepted but not yet scored lives in the runtime, not the engine.
    """
    payload = orjson.dumps(engine.state())
    return _MAGIC + STATE_VERSION.to_bytes(2, "big") + zlib.compress(payload, ZLIB_LEVEL)


def decode_engine_state(blob: bytes) -> dict[str, Any]:
    """The state document inside ``blob``; raises :class:`InvalidInput` if it is not a readable one."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise InvalidInput(f"engine state must be bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER_LEN or not blob.startswith(_MAGIC):
        raise InvalidInput(f"not a sigstream engine state: it does not start with {_MAGIC!r}", raw=blob[:16])
    version = int.from_bytes(blob[len(_MAGIC) : _HEADER_LEN], "big")
    if version != STATE_VERSION:
        raise InvalidInput(
            f"engine state format version {version} is not supported (this build reads version {STATE_VERSION});"
            " rebuild the state from the input instead",
            raw=blob[:16],
        )
    try:
        payload = zlib.decompress(blob[_HEADER_LEN:])
    except zlib.error as exc:
        raise InvalidInput(f"corrupt engine state: zlib: {exc}", raw=blob[:16]) from None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"corrupt engine state: malformed JSON: {exc}", raw=blob[:16]) from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"corrupt engine state: the document is a {type(doc).__name__}, not an object")
    return doc


def restore_engine_state(engine: SignalEngine, blob: bytes) -> None:
    """Restore a blob of :func:`engine_state` into ``engine``, built with the same settings (freshly, or its
    state is replaced wholesale).

    Raises:
        InvalidInput: the blob is corrupt, of another format version, or made by an engine on another
            interval or ``bars_from``; the reason says which. ``engine`` is then left untouched.
    """
    engine.restore_state(decode_engine_state(blob))


# -- checked values, shared by the state() / from_state() methods --------------------------------------
def corrupt(what: str, problem: str) -> InvalidInput:
    """The error for a state document that does not hold what it should at ``what``."""
    return InvalidInput(f"corrupt engine state: {what}: {problem}")


def encode_float(value: float) -> float | str:
    """``value`` as JSON can hold it: itself when finite, else ``"inf"``, ``"-inf"`` or ``"nan"``."""
    if math.isfinite(value):
        return value
    return "nan" if value != value else ("inf" if value > 0 else "-inf")


def encode_floats(values: Sequence[float]) -> list[float | str]:
    return [v if math.isfinite(v) else encode_float(v) for v in values]


def encode_opt_float(value: float | None) -> float | str | None:
    return None if value is None else encode_float(value)


def decode_float(value: object, what: str) -> float:
    """Inverse of :func:`encode_float`. An int stays an int (a float field the caller filled with an int)."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    raise corrupt(what, f"expected a number, got {value!r}")


def decode_opt_float(value: object, what: str) -> float | None:
    return None if value is None else decode_float(value, what)


def decode_floats(value: object, what: str, max_len: int | None = None) -> list[float]:
    items = decode_list(value, what)
    if max_len is not None and len(items) > max_len:
        raise corrupt(what, f"{len(items)} values, at most {max_len} fit")
    return [decode_float(v, what) for v in items]


def decode_int(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise corrupt(what, f"expected an integer, got {value!r}")


def decode_opt_int(value: object, what: str) -> int | None:
    return None if value is None else decode_int(value, what)


def decode_str(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    raise corrupt(what, f"expected a string, got {value!r}")


def decode_list(value: object, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise corrupt(what, f"expected a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise corrupt(what, f"expected {length} items, got {len(value)}")
    return value


def decode_dict(value: object, what: str, keys: Sequence[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise corrupt(what, f"expected an object, got {type(value).__name__}")
    if keys is not None and set(value) != set(keys):
        missing, extra = sorted(set(keys) - set(value)), sorted(set(value) - set(keys))
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise corrupt(what, "; ".join(parts))
    return value
