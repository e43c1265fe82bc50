"""A small, seeded demo recording, for machines without the shared datasets."""

from __future__ import annotations

import math
import random
from pathlib import Path

from adapters.bybit.frames import kline_frame
from adapters.files.sink import RecordingWriter
from engine.events import Bar, Interval, NewsItem

DEMO_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_HEADLINES = {
    1: ["{name} surges as ETF inflows hit a record", "{name} rallies after strong institutional demand",
        "Analysts upgrade {name} outlook as adoption climbs"],
    -1: ["{name} plunges after exchange hack", "Regulators weigh a ban that hits {name}",
         "{name} drops as liquidations mount"],
    0: ["{name} trades sideways ahead of the Fed meeting", "What the latest {name} upgrade means for users"],
}
_ASSETS = {"BTCUSDT": ("Bitcoin", 95_000.0), "ETHUSDT": ("Ethereum", 3_400.0)}


def write_demo_recording(path: Path, *, minutes: int = 2_880, news_every: int = 45, seed: int = 7) -> int:
    """Write 1-minute kline frames for BTC and ETH plus mood-driven news; returns the line count."""
    rng = random.Random(seed)
    lines: list[tuple[int, int, dict[str, object] | NewsItem]] = []
    for order, (symbol, (name, price)) in enumerate(_ASSETS.items()):
        mood = 0
        for minute in range(minutes):
            if minute % news_every == 0:
                mood = rng.choice((-1, 0, 1))
                published = DEMO_START_MS + minute * 60_000 + rng.randrange(60_000)
                headline = rng.choice(_HEADLINES[mood]).format(name=name)
                lines.append((published + 800, order, NewsItem(
                    f"demo-{symbol}-{minute}", "demo", headline, "", (), (), "", published, published + 800)))
            drift = 0.0004 * mood
            close = price * math.exp(drift + rng.gauss(0.0, 0.0012))
            high = max(price, close) * (1 + abs(rng.gauss(0, 0.0005)))
            low = min(price, close) * (1 - abs(rng.gauss(0, 0.0005)))
            start = DEMO_START_MS + minute * 60_000
            bar = Bar(symbol, Interval.M1, start, round(price, 2), round(high, 2), round(low, 2),
                      round(close, 2), round(rng.uniform(5, 50), 3), start + 60_000, start + 60_000)
            lines.append((start + 60_000, order, kline_frame(bar, symbol, Interval.M1)))
            price = close
    lines.sort(key=lambda entry: (entry[0], entry[1]))
    with RecordingWriter(path, staged=True) as writer:  # named only once complete
        for ts_init, _, payload in lines:
            if isinstance(payload, NewsItem):
                writer.write_news(payload)
            else:
                writer.write_frame(payload, ts_init)
        return writer.count
