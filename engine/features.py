"""Incremental rolling features per symbol, matching the pandas contract in issue 3.

Each :class:`FeatureCalculator` sees closed bars of one symbol and interval in order and updates
in O(window) per bar (20 at most), never recomputing over history. Windowed means and standard
deviations are computed two-pass over the window rather than from running sums: running sums of
squares cancel catastrophically for prices like BTC's (mean^2/var ~ 1e6), which would break the
1e-7 tolerance over long series.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from engine.bars import bar_order_error, check_ohlcv
from engine.events import FEATURE_NAMES, Bar, Features, Interval
from engine.state import (
    decode_float,
    decode_floats,
    decode_int,
    decode_list,
    decode_opt_float,
    decode_opt_int,
    encode_float,
    encode_floats,
    encode_opt_float,
)

_DAY_MS = 86_400_000
_RSI_ALPHA = 1.0 / 14.0
_ATR_ALPHA = 1.0 / 14.0
_FAST_ALPHA = 2.0 / (12 + 1)
_SLOW_ALPHA = 2.0 / (26 + 1)
_WINDOW = 20
_INF = math.inf


def _ewm(previous: float, value: float, alpha: float) -> float:
    # pandas' adjust=False recursion, including its normalisation by (1 - alpha) + alpha.
    return ((1.0 - alpha) * previous + alpha * value) / ((1.0 - alpha) + alpha)


def _mean_std(window: deque[float], ddof: int) -> tuple[float, float]:
    """Two-pass mean and standard deviation; exactly 0 for a constant window, as pandas reports."""
    n = len(window)
    mean = sum(window) / n
    first = window[0]
    if all(x == first for x in window):
        return first, 0.0
    ss = sum([(x - mean) * (x - mean) for x in window])
    return mean, math.sqrt(ss / (n - ddof))


class FeatureCalculator:
    """Rolling features of one symbol on one bar interval."""

    __slots__ = (
        "_atr",
        "_closes",
        "_cum_pv",
        "_cum_v",
        "_ema_fast",
        "_ema_slow",
        "_gain",
        "_loss",
        "_prev_close",
        "_returns",
        "_session_day",
        "_volumes",
        "bars_seen",
        "interval",
        "last_start",
        "symbol",
    )

    def __init__(self, symbol: str, interval: Interval) -> None:
        self.symbol = symbol
        self.interval = interval
        self.bars_seen = 0
        self.last_start: int | None = None
        self._closes: deque[float] = deque(maxlen=_WINDOW + 1)
        self._returns: deque[float] = deque(maxlen=_WINDOW)
        self._volumes: deque[float] = deque(maxlen=_WINDOW)
        self._ema_fast = 0.0
        self._ema_slow = 0.0
        self._gain: float | None = None
        self._loss: float | None = None
        self._atr = 0.0
        self._prev_close: float | None = None
        self._session_day = -1
        self._cum_pv = 0.0
        self._cum_v = 0.0

    def update(self, bar: Bar, ts_init: int | None = None) -> Features:
        """Fold one closed bar in and return the features as of its close.

        Raises:
            InvalidInput: the bar is not newer than the last one (a duplicate would count twice in every
                window), or its prices are unusable (see :func:`engine.bars.check_ohlcv`).
        """
        close, high, low, volume = bar.close, bar.high, bar.low, bar.volume
        if (order_error := bar_order_error(bar, self.last_start)) is not None:
            raise order_error
        open_ = bar.open
        # Inline on this hot path; check_ohlcv holds the rule and words the error.
        if not (0.0 < low <= open_ <= high and low <= close <= high and 0.0 <= volume < _INF and high < _INF):
            check_ohlcv(self.symbol, open_, high, low, close, volume)
        self.last_start = bar.start
        closes, returns, volumes = self._closes, self._returns, self._volumes
        prev = self._prev_close
        closes.append(close)
        volumes.append(volume)
        n_closes = len(closes)

        return_1 = return_5 = return_20 = volatility = None
        rsi: float | None = None
        if prev is None:
            self._ema_fast = self._ema_slow = close
            true_range = high - low
            self._atr = true_range
        else:
            return_1 = close / prev - 1.0
            returns.append(return_1)
            if n_closes >= 6:
                return_5 = close / closes[-6] - 1.0
            if n_closes == _WINDOW + 1:
                return_20 = close / closes[0] - 1.0
            if len(returns) == _WINDOW:
                volatility = _mean_std(returns, 1)[1]
            diff = close - prev
            up = diff if diff > 0.0 else 0.0
            down = -diff if diff < 0.0 else 0.0
            if self._gain is None or self._loss is None:
                self._gain, self._loss = up, down
            else:
                self._gain = _ewm(self._gain, up, _RSI_ALPHA)
                self._loss = _ewm(self._loss, down, _RSI_ALPHA)
            rsi = 100.0 if self._loss == 0.0 else 100.0 - 100.0 / (1.0 + self._gain / self._loss)
            self._ema_fast = _ewm(self._ema_fast, close, _FAST_ALPHA)
            self._ema_slow = _ewm(self._ema_slow, close, _SLOW_ALPHA)
            true_range = max(high - low, abs(high - prev), abs(low - prev))
            self._atr = _ewm(self._atr, true_range, _ATR_ALPHA)
        self._prev_close = close

        volume_ratio = bb_position = None
        if len(volumes) == _WINDOW:
            mean_volume = sum(volumes) / _WINDOW
            volume_ratio = volume / mean_volume if mean_volume != 0.0 else None
            window = closes if n_closes == _WINDOW else deque(closes, maxlen=_WINDOW)
            mean_close, std_close = _mean_std(window, 0)
            if std_close != 0.0:
                bb_position = (close - (mean_close - 2.0 * std_close)) / (4.0 * std_close)

        day = bar.start // _DAY_MS
        if day != self._session_day:
            self._session_day = day
            self._cum_pv = self._cum_v = 0.0
        self._cum_pv += ((high + low + close) / 3.0) * volume
        self._cum_v += volume
        vwap_distance = None
        if self._cum_v != 0.0:
            vwap_distance = (close - self._cum_pv / self._cum_v) / close

        self.bars_seen += 1
        return Features(
            self.symbol,
            self.interval,
            bar.start,
            close,
            return_1,
            return_5,
            return_20,
            volume_ratio,
            volatility,
            rsi,
            self._ema_fast - self._ema_slow,
            bb_position,
            self._atr / close,
            vwap_distance,
            bar.ts_event,
            bar.ts_init if ts_init is None else ts_init,
        )

    def warm(self, bars: list[Bar]) -> None:
        """Restore state from recent bars (e.g. from the feature store or a REST backfill)."""
        for bar in bars:
            self.update(bar)

    # -- snapshots (engine.state); not on the per-bar path ---------------------------------------------
    def state(self) -> list[Any]:
        """Everything :meth:`update` reads, JSON-ready: ``[bars_seen, last_start, closes, returns, volumes,
        ema_fast, ema_slow, gain, loss, atr, prev_close, session_day, cum_pv, cum_v]``."""
        return [
            self.bars_seen,
            self.last_start,
            encode_floats(self._closes),
            encode_floats(self._returns),
            encode_floats(self._volumes),
            encode_float(self._ema_fast),
            encode_float(self._ema_slow),
            encode_opt_float(self._gain),
            encode_opt_float(self._loss),
            encode_float(self._atr),
            encode_opt_float(self._prev_close),
            self._session_day,
            encode_float(self._cum_pv),
            encode_float(self._cum_v),
        ]

    @classmethod
    def from_state(cls, symbol: str, interval: Interval, state: object) -> FeatureCalculator:
        """The calculator :meth:`state` describes; raises :class:`InvalidInput` if ``state`` is not one."""
        what = f"features of {symbol}"
        s = decode_list(state, what, 14)
        calc = cls(symbol, interval)
        calc.bars_seen = decode_int(s[0], what)
        calc.last_start = decode_opt_int(s[1], what)
        calc._closes.extend(decode_floats(s[2], what, _WINDOW + 1))
        calc._returns.extend(decode_floats(s[3], what, _WINDOW))
        calc._volumes.extend(decode_floats(s[4], what, _WINDOW))
        calc._ema_fast = decode_float(s[5], what)
        calc._ema_slow = decode_float(s[6], what)
        calc._gain = decode_opt_float(s[7], what)
        calc._loss = decode_opt_float(s[8], what)
        calc._atr = decode_float(s[9], what)
        calc._prev_close = decode_opt_float(s[10], what)
        calc._session_day = decode_int(s[11], what)
        calc._cum_pv = decode_float(s[12], what)
        calc._cum_v = decode_float(s[13], what)
        return calc


def features_state(features: Features) -> list[Any]:
    """A :class:`Features` JSON-ready, without its symbol and interval (the caller keys and checks those):
    ``[start, close, *the ten features, ts_event, ts_init]``."""
    return [
        features.start,
        encode_float(features.close),
        *[encode_opt_float(getattr(features, name)) for name in FEATURE_NAMES],
        features.ts_event,
        features.ts_init,
    ]


def features_from_state(symbol: str, interval: Interval, state: object) -> Features:
    """Inverse of :func:`features_state`; raises :class:`InvalidInput` if ``state`` is not one."""
    what = f"latest features of {symbol}"
    s = decode_list(state, what, 4 + len(FEATURE_NAMES))
    start, close, ts_event, ts_init = (decode_int(s[0], what), decode_float(s[1], what), decode_int(s[-2], what),
                                       decode_int(s[-1], what))  # fmt: skip
    r1, r5, r20, vr, vol, rsi, macd, bb, atr, vwap = (decode_opt_float(v, what) for v in s[2:-2])
    return Features(symbol, interval, start, close, r1, r5, r20, vr, vol, rsi, macd, bb, atr, vwap, ts_event, ts_init)
