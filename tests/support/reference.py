"""Independent reference: the issue's pandas expressions, verbatim."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pandas_features(bars: pd.DataFrame) -> pd.DataFrame:
    """bars: columns start (epoch ms), open, high, low, close, volume, in bar order."""
    close, high, low, volume = bars["close"], bars["high"], bars["low"], bars["volume"]
    out = pd.DataFrame(index=bars.index)
    out["return_1"] = close.pct_change(1)
    out["return_5"] = close.pct_change(5)
    out["return_20"] = close.pct_change(20)
    out["volume_ratio"] = volume / volume.rolling(20).mean()
    out["volatility_20"] = close.pct_change().rolling(20).std()
    d = close.diff()
    g = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    # 100 where l == 0; null before the first non-null diff.
    out["rsi_14"] = (100 - 100 / (1 + g / loss)).where(loss != 0, 100.0).where(g.notna())
    out["macd"] = close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()
    m = close.rolling(20).mean()
    s = close.rolling(20).std(ddof=0)
    out["bb_position"] = (close - (m - 2 * s)) / (4 * s)
    prev = close.shift()
    tr = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    tr.iloc[0] = high.iloc[0] - low.iloc[0]
    out["atr_ratio"] = tr.ewm(alpha=1 / 14, adjust=False).mean() / close
    day = bars["start"] // 86_400_000
    typical = ((high + low + close) / 3) * volume
    vwap = typical.groupby(day).cumsum() / volume.groupby(day).cumsum()
    out["vwap_distance"] = (close - vwap) / close
    return out.replace([np.inf, -np.inf], np.nan)
