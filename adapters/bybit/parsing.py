"""Bybit v5 public websocket frames -> engine events. The only place Bybit units and times are converted.

Bybit sends numbers as strings and times as epoch milliseconds. Topics handled:

* ``kline.{interval}.{symbol}``  -> :class:`engine.events.Bar`, for confirmed (closed) klines only;
* ``publicTrade.{symbol}``       -> :class:`engine.events.Trade`, one per trade in the frame;
* ``tickers.{symbol}``           -> :class:`engine.events.Ticker` (a delta carries only changed fields:
  ``None`` means "not in this frame"; :func:`merge_ticker` folds a delta onto the previous ticker);
* ``orderbook.{depth}.{symbol}`` -> :class:`OrderBookUpdate`, which :mod:`adapters.bybit.orderbook` applies.

Subscribe/unsubscribe acks and pongs parse to ``[]``. Anything else raises
:class:`engine.errors.InvalidInput` with the reason, so the caller can dead-letter it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from engine.bars import closed_bar
from engine.errors import InvalidInput
from engine.events import Event, Interval, Side, Ticker, Trade


class OrderBookUpdate(msgspec.Struct, frozen=True, gc=False):
    """One ``orderbook.{depth}.{symbol}`` frame: a full snapshot or a delta of changed levels.

    Levels are ``(price, size)``; in a delta a size of 0 deletes the level. ``update_id`` is Bybit's
    ``u`` (consecutive per topic; 1 after a Bybit service restart), ``seq`` its cross sequence.
    ``ts_event`` is the matching engine's ``cts`` when present, else the frame's ``ts``.
    """

    topic: str
    symbol: str
    snapshot: bool
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    update_id: int
    seq: int | None
    ts_event: int
    ts_init: int


Parsed = Event | OrderBookUpdate
"""What :func:`parse_frame` yields: engine events, plus order book updates for the local book."""

_CONTROL_OPS = frozenset({"subscribe", "unsubscribe", "ping", "pong"})


# --- intervals -------------------------------------------------------------------------------------


def parse_interval(text: object) -> Interval:
    """Map a Bybit kline interval (``"1"``, ``"5"``, ``"60"``, ``"D"``...) to the engine's Interval."""
    match text:
        case "1":
            return Interval.M1
        case "5":
            return Interval.M5
        case "15":
            return Interval.M15
        case "60":
            return Interval.H1
        case "D":
            return Interval.D1
        case "3" | "30" | "120" | "240" | "360" | "720" | "W" | "M":
            raise InvalidInput(f"Bybit kline interval {text!r} has no engine interval (1m/5m/15m/1h/1d)")
        case _:
            raise InvalidInput(f"unknown Bybit kline interval {text!r}")


def bybit_interval(interval: Interval) -> str:
    """The Bybit spelling of an engine Interval, as used in ``kline.{interval}.{symbol}``."""
    match interval:
        case Interval.M1:
            return "1"
        case Interval.M5:
            return "5"
        case Interval.M15:
            return "15"
        case Interval.H1:
            return "60"
        case Interval.D1:
            return "D"
    raise InvalidInput(f"interval {interval!r} has no Bybit spelling")  # pragma: no cover - enum is closed


# --- topics ----------------------------------------------------------------------------------------


def kline_topic(interval: Interval, symbol: str) -> str:
    return f"kline.{bybit_interval(interval)}.{symbol}"


def trade_topic(symbol: str) -> str:
    return f"publicTrade.{symbol}"


def ticker_topic(symbol: str) -> str:
    return f"tickers.{symbol}"


def orderbook_topic(depth: int, symbol: str) -> str:
    return f"orderbook.{depth}.{symbol}"


# --- field helpers ---------------------------------------------------------------------------------


def _num(value: object, what: str, topic: str) -> float:
    """A finite float from Bybit's string (or, leniently, JSON number) field."""
    if isinstance(value, str):
        try:
            # float() accepts "1_000"; Bybit never sends that, so it means corruption.
            number = float(value) if "_" not in value else math.nan
        except ValueError:
            raise InvalidInput(f"{topic}: non-numeric {what} {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise InvalidInput(f"{topic}: non-numeric {what} {value!r}")
    if not math.isfinite(number):
        raise InvalidInput(f"{topic}: non-numeric {what} {value!r}")
    return number


def _opt_num(data: Mapping[str, Any], key: str, topic: str) -> float | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    return _num(value, key, topic)


def _ms(value: object, what: str, topic: str) -> int:
    """Epoch milliseconds from an int or a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise InvalidInput(f"{topic}: {what} is not epoch milliseconds: {value!r}")
    if number < 0:
        raise InvalidInput(f"{topic}: negative {what} {number}")
    return number


def _field(data: Mapping[str, Any], key: str, topic: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise InvalidInput(f"{topic}: missing field {key!r}") from None


def _mapping(value: object, what: str, topic: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{topic}: {what} is not an object")
    return value


def _list(value: object, what: str, topic: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{topic}: {what} is not a list")
    return value


# --- per-topic parsers -----------------------------------------------------------------------------


def _parse_kline(topic: str, parts: list[str], frame: Mapping[str, Any], ts_init: int) -> list[Parsed]:
    if len(parts) != 3 or not parts[2]:
        raise InvalidInput(f"malformed kline topic {topic!r}; expected kline.{{interval}}.{{symbol}}")
    interval = parse_interval(parts[1])
    symbol = parts[2]
    bars: list[Parsed] = []
    for item in _list(_field(frame, "data", topic), "data", topic):
        row = _mapping(item, "kline", topic)
        confirm = _field(row, "confirm", topic)
        if not isinstance(confirm, bool):
            raise InvalidInput(f"{topic}: confirm is not a boolean: {confirm!r}")
        row_interval = row.get("interval")
        if row_interval is not None and row_interval != parts[1]:
            raise InvalidInput(f"{topic}: kline interval {row_interval!r} does not match the topic")
        start = _ms(_field(row, "start", topic), "start", topic)
        open_ = _num(_field(row, "open", topic), "open", topic)
        high = _num(_field(row, "high", topic), "high", topic)
        low = _num(_field(row, "low", topic), "low", topic)
        close = _num(_field(row, "close", topic), "close", topic)
        volume = _num(_field(row, "volume", topic), "volume", topic)
        if not confirm:
            # Bybit pushes the forming bar every ~second; only the closed bar is a Bar.
            continue
        bars.append(closed_bar(symbol, interval, start, (open_, high, low, close, volume), ts_init))
    return bars


def _parse_side(value: object, topic: str) -> Side:
    match value:
        case "Buy":
            return Side.BUY
        case "Sell":
            return Side.SELL
        case _:
            raise InvalidInput(f"{topic}: unknown trade side {value!r}")


def _parse_trades(topic: str, parts: list[str], frame: Mapping[str, Any], ts_init: int) -> list[Parsed]:
    if len(parts) != 2 or not parts[1]:
        raise InvalidInput(f"malformed trade topic {topic!r}; expected publicTrade.{{symbol}}")
    symbol = parts[1]
    trades: list[Parsed] = []
    for item in _list(_field(frame, "data", topic), "data", topic):
        row = _mapping(item, "trade", topic)
        row_symbol = _field(row, "s", topic)
        if row_symbol != symbol:
            raise InvalidInput(f"{topic}: trade symbol {row_symbol!r} does not match the topic")
        price = _num(_field(row, "p", topic), "price", topic)
        size = _num(_field(row, "v", topic), "size", topic)
        if price <= 0 or size < 0:
            raise InvalidInput(f"{topic}: non-positive price {price} or negative size {size}")
        trade_id = _field(row, "i", topic)
        if not isinstance(trade_id, str) or not trade_id:
            raise InvalidInput(f"{topic}: trade id is not a non-empty string: {trade_id!r}")
        trades.append(
            Trade(
                symbol=symbol,
                price=price,
                size=size,
                side=_parse_side(_field(row, "S", topic), topic),
                trade_id=trade_id,
                ts_event=_ms(_field(row, "T", topic), "T", topic),
                ts_init=ts_init,
            )
        )
    return trades


def _frame_type(frame: Mapping[str, Any], topic: str) -> bool:
    """True for a snapshot, False for a delta."""
    match frame.get("type"):
        case "snapshot":
            return True
        case "delta":
            return False
        case other:
            raise InvalidInput(f"{topic}: unknown frame type {other!r}")


def _parse_ticker(topic: str, parts: list[str], frame: Mapping[str, Any], ts_init: int) -> list[Parsed]:
    if len(parts) != 2 or not parts[1]:
        raise InvalidInput(f"malformed ticker topic {topic!r}; expected tickers.{{symbol}}")
    _frame_type(frame, topic)
    symbol = parts[1]
    data = _mapping(_field(frame, "data", topic), "data", topic)
    data_symbol = _field(data, "symbol", topic)
    if data_symbol != symbol:
        raise InvalidInput(f"{topic}: ticker symbol {data_symbol!r} does not match the topic")
    last = _opt_num(data, "lastPrice", topic)
    bid = _opt_num(data, "bid1Price", topic)
    ask = _opt_num(data, "ask1Price", topic)
    if last is None and bid is None and ask is None:
        # A delta that only moves open interest, funding, etc.: nothing the engine tracks changed.
        return []
    ts = _ms(_field(frame, "ts", topic), "ts", topic)
    return [Ticker(symbol=symbol, last_price=last, bid=bid, ask=ask, ts_event=ts, ts_init=ts_init)]


def _levels(value: object, what: str, topic: str) -> tuple[tuple[float, float], ...]:
    levels = []
    for level in _list(value, what, topic):
        if not isinstance(level, list) or len(level) != 2:
            raise InvalidInput(f"{topic}: {what} level is not [price, size]: {level!r}")
        price = _num(level[0], f"{what} price", topic)
        size = _num(level[1], f"{what} size", topic)
        if price <= 0 or size < 0:
            raise InvalidInput(f"{topic}: {what} level has non-positive price or negative size: {level!r}")
        levels.append((price, size))
    return tuple(levels)


def _parse_orderbook(topic: str, parts: list[str], frame: Mapping[str, Any], ts_init: int) -> list[Parsed]:
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        raise InvalidInput(f"malformed orderbook topic {topic!r}; expected orderbook.{{depth}}.{{symbol}}")
    snapshot = _frame_type(frame, topic)
    symbol = parts[2]
    data = _mapping(_field(frame, "data", topic), "data", topic)
    data_symbol = _field(data, "s", topic)
    if data_symbol != symbol:
        raise InvalidInput(f"{topic}: book symbol {data_symbol!r} does not match the topic")
    seq = data.get("seq")
    ts = _ms(_field(frame, "ts", topic), "ts", topic)
    cts = frame.get("cts")
    return [
        OrderBookUpdate(
            topic=topic,
            symbol=symbol,
            snapshot=snapshot,
            bids=_levels(_field(data, "b", topic), "bid", topic),
            asks=_levels(_field(data, "a", topic), "ask", topic),
            update_id=_ms(_field(data, "u", topic), "u", topic),
            seq=None if seq is None else _ms(seq, "seq", topic),
            ts_event=ts if cts is None else _ms(cts, "cts", topic),
            ts_init=ts_init,
        )
    ]


def _parse_control(frame: Mapping[str, Any]) -> list[Parsed]:
    op = frame["op"]
    success = frame.get("success", True)  # spot-style pongs carry no "success"
    if success is not True:
        raise InvalidInput(f"Bybit rejected {op}: {frame.get('ret_msg', '')!s}")
    return []


def parse_frame(frame: object, ts_init: int) -> list[Parsed]:
    """Parse one decoded Bybit v5 public frame.

    Args:
        frame: The JSON object Bybit sent (already decoded).
        ts_init: When sigstream received it, epoch ms.

    Returns:
        The events in the frame, in order; ``[]`` for acks, pongs and unconfirmed klines.

    Raises:
        InvalidInput: Unknown topic, missing field, non-numeric number, unknown enum value, or a
            subscription Bybit rejected.
    """
    if not isinstance(frame, Mapping):
        raise InvalidInput("frame is not a JSON object", raw=frame)
    try:
        topic = frame.get("topic")
        if topic is None:
            if frame.get("op") in _CONTROL_OPS:
                return _parse_control(frame)
            raise InvalidInput("frame has neither a topic nor a known op")
        if not isinstance(topic, str):
            raise InvalidInput(f"topic is not a string: {topic!r}")
        parts = topic.split(".")
        match parts[0]:
            case "kline":
                return _parse_kline(topic, parts, frame, ts_init)
            case "publicTrade":
                return _parse_trades(topic, parts, frame, ts_init)
            case "tickers":
                return _parse_ticker(topic, parts, frame, ts_init)
            case "orderbook":
                return _parse_orderbook(topic, parts, frame, ts_init)
            case _:
                raise InvalidInput(f"unknown topic {topic!r}")
    except InvalidInput as exc:
        if exc.raw is None:
            exc.raw = frame
        raise


def decode_message(message: str | bytes) -> Mapping[str, Any]:
    """Decode one websocket text message; malformed JSON or a non-object raises InvalidInput."""
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", raw=message) from None
    if not isinstance(frame, dict):
        raise InvalidInput("frame is not a JSON object", raw=message)
    return frame


def parse_message(message: str | bytes, ts_init: int) -> list[Parsed]:
    """:func:`decode_message` then :func:`parse_frame`."""
    return parse_frame(decode_message(message), ts_init)


def merge_ticker(previous: Ticker | None, update: Ticker) -> Ticker:
    """Fold a ticker delta onto the previous ticker of the same symbol (``None`` keeps the old value)."""
    if previous is None or previous.symbol != update.symbol:
        return update
    return Ticker(
        symbol=update.symbol,
        last_price=previous.last_price if update.last_price is None else update.last_price,
        bid=previous.bid if update.bid is None else update.bid,
        ask=previous.ask if update.ask is None else update.ask,
        ts_event=update.ts_event,
        ts_init=update.ts_init,
    )
