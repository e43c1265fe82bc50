"""Every feature against the issue's pandas expressions, on the shared Bybit klines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.events import FEATURE_NAMES, Bar, Interval
from engine.features import FeatureCalculator
from tests.support.data import shared_data_dir
from tests.support.reference import pandas_features


def _bars_from_frame(frame: pd.DataFrame, symbol: str, interval: Interval) -> list[Bar]:
    return [
        Bar(symbol, interval, int(r.start), r.open, r.high, r.low, r.close, r.volume,
            int(r.start) + interval.ms, int(r.start) + interval.ms)
        for r in frame.itertuples(index=False)
    ]


def _load_klines(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    start = pd.to_datetime(raw["timestamp"], utc=True).astype("int64") // 1_000_000
    return pd.DataFrame({
        "start": start, "open": raw["open"], "high": raw["high"],
        "low": raw["low"], "close": raw["close"], "volume": raw["volume"],
    })


def _assert_matches(frame: pd.DataFrame, interval: Interval) -> int:
    calc = FeatureCalculator("X", interval)
    expected = pandas_features(frame)
    checked = 0
    for i, bar in enumerate(_bars_from_frame(frame, "X", interval)):
        got = calc.update(bar)
        for name in FEATURE_NAMES:
            want = expected[name].iat[i]
            value = getattr(got, name)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                assert pd.isna(want), f"bar {i} {name}: got null, pandas has {want}"
                continue
            assert not pd.isna(want), f"bar {i} {name}: got {value}, pandas has null"
            assert abs(value - want) <= 1e-7 * max(1.0, abs(want)), f"bar {i} {name}: {value} != {want}"
            checked += 1
    return checked


@pytest.mark.parametrize(
    ("filename", "interval"),
    [
        ("BTCUSDT_5m.csv", Interval.M5),
        ("ADAUSDT_1m.csv", Interval.M1),
        ("DOGEUSDT_1m.csv", Interval.M1),
        ("DOTUSDT_1m.csv", Interval.M1),
    ],
)
def test_features_match_pandas_on_shared_klines(filename: str, interval: Interval) -> None:
    path = shared_data_dir() / "bybit" / filename
    frame = _load_klines(path)
    checked = _assert_matches(frame, interval)
    assert checked > len(frame) * 9  # nearly every bar has all ten features


def test_features_are_null_until_their_window_fills() -> None:
    calc = FeatureCalculator("X", Interval.M1)
    bars = [Bar("X", Interval.M1, i * 60_000, 10 + i, 11 + i, 9 + i, 10.5 + i, 100.0 + i, 0, 0) for i in range(21)]
    out = [calc.update(b) for b in bars]
    assert out[0].return_1 is None and out[1].return_1 is not None
    assert out[4].return_5 is None and out[5].return_5 is not None
    assert out[18].volume_ratio is None and out[19].volume_ratio is not None
    assert out[19].bb_position is not None
    assert out[19].volatility_20 is None and out[20].volatility_20 is not None
    assert out[19].return_20 is None and out[20].return_20 is not None
    assert out[0].macd == 0.0 and out[0].atr_ratio is not None and out[0].rsi_14 is None


def test_constant_prices_give_null_bollinger_and_zero_volatility() -> None:
    calc = FeatureCalculator("X", Interval.M1)
    last = None
    for i in range(25):
        last = calc.update(Bar("X", Interval.M1, i * 60_000, 5.0, 5.0, 5.0, 5.0, 1.0, 0, 0))
    assert last is not None
    assert last.bb_position is None
    assert last.volatility_20 == 0.0
    assert last.rsi_14 == 100.0


price = st.floats(min_value=0.5, max_value=2.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    moves=st.lists(st.tuples(price, st.floats(0.0, 0.05), st.floats(0.0, 50.0)), min_size=1, max_size=80),
    day_breaks=st.integers(min_value=1, max_value=40),
)
def test_incremental_features_equal_batch_pandas_on_random_series(moves, day_breaks) -> None:
    rows = []
    close = 100.0
    for i, (mult, spread, vol) in enumerate(moves):
        close = close * (0.9 + 0.1 * mult)
        rows.append({
            "start": (i // day_breaks) * 86_400_000 + (i % day_breaks) * 60_000,
            "open": close, "high": close * (1 + spread), "low": close * (1 - spread),
            "close": close, "volume": vol,
        })
    frame = pd.DataFrame(rows)
    _assert_matches(frame, Interval.M1)


def test_reference_is_not_trivially_null() -> None:
    # Guards the guard: the pandas reference must produce numbers for the comparison to mean anything.
    frame = pd.DataFrame({"start": np.arange(30) * 60_000, "open": 1.0, "high": np.linspace(2, 3, 30),
                          "low": 0.5, "close": np.linspace(1, 2, 30), "volume": 1.0})
    ref = pandas_features(frame)
    assert ref.iloc[-1].notna().all()


def _bar(i: int, close: float = 100.0, **kw: float) -> Bar:
    start = i * 60_000
    values = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 5.0} | kw
    return Bar("BTCUSDT", Interval.M1, start, values["open"], values["high"], values["low"], values["close"],
               values["volume"], start + 60_000, start + 60_000)  # fmt: skip


def test_a_duplicate_or_older_bar_is_rejected_and_leaves_the_state_alone() -> None:
    calc = FeatureCalculator("BTCUSDT", Interval.M1)
    for i in range(25):
        last = calc.update(_bar(i, 100.0 + i % 4))
    with pytest.raises(InvalidInput, match="duplicate bar"):
        calc.update(_bar(24, 100.0))
    with pytest.raises(InvalidInput, match="out-of-order bar"):
        calc.update(_bar(3, 100.0))
    assert calc.bars_seen == 25
    after = calc.update(_bar(25, 100.0 + 25 % 4))
    fresh = FeatureCalculator("BTCUSDT", Interval.M1)
    for i in range(26):
        expected = fresh.update(_bar(i, 100.0 + i % 4))
    assert after == expected and last.start == 24 * 60_000


@pytest.mark.parametrize(
    "bad",
    [{"close": 0.0, "low": 0.0}, {"low": -1.0}, {"high": math.inf}, {"close": math.nan}, {"volume": -1.0},
     {"open": 200.0}],
)  # fmt: skip
def test_bars_with_unusable_prices_are_invalid_input_not_a_crash(bad: dict[str, float]) -> None:
    calc = FeatureCalculator("BTCUSDT", Interval.M1)
    calc.update(_bar(0))
    with pytest.raises(InvalidInput, match="inconsistent bar"):
        calc.update(_bar(1, **bad))
    assert calc.update(_bar(1)).start == 60_000  # the rejected bar did not count as seen


def test_warm_skips_bars_the_state_already_holds() -> None:
    from engine.pipeline import SignalEngine

    engine = SignalEngine()
    engine.warm("BTCUSDT", [_bar(i, 100.0 + i) for i in range(10)])
    engine.warm("BTCUSDT", [_bar(i, 100.0 + i) for i in range(5, 15)])  # a backfill overlapping the warm-up
    reference = SignalEngine()
    reference.warm("BTCUSDT", [_bar(i, 100.0 + i) for i in range(15)])
    assert engine.latest_features("BTCUSDT") == reference.latest_features("BTCUSDT")
    assert engine.stats.warm_bars_skipped == 5
