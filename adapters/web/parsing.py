"""Engine events -> the JSON the page reads (the one place the page's shapes are defined).

* ``bar``: ``{"symbol","interval","start","close","ts_event","features":{ten names: value|null}}``, one per
  closed bar (from a :class:`engine.events.Features`);
* ``signal``: the v1 signal record itself (``schemas/signal.v1.schema.json``);
* ``news``: ``{"id","headline","url","symbols","label","confidence","scores":{"bearish","neutral","bullish"},
  "ts_event","ts_init"}``, one per scored item; ``headline`` is null when the item itself was not seen.
"""

from __future__ import annotations

import math
from typing import Any

from engine.events import Features, NewsItem, SentimentScore


def _finite(value: float | None) -> float | None:
    # JSON has no NaN or infinity; the page shows a dash for null.
    return value if value is not None and math.isfinite(value) else None


def bar_update(features: Features) -> dict[str, Any]:
    return {
        "symbol": features.symbol,
        "interval": features.interval.value,
        "start": features.start,
        "close": _finite(features.close),
        "ts_event": features.ts_event,
        "features": {name: _finite(value) for name, value in features.values().items()},
    }


def news_update(score: SentimentScore, item: NewsItem | None) -> dict[str, Any]:
    return {
        "id": score.news_id,
        "headline": item.headline if item is not None else None,
        "url": item.url if item is not None and item.url else None,
        "symbols": list(score.symbols),
        "label": score.label,
        "confidence": score.confidence,
        "scores": {"bearish": score.bearish, "neutral": score.neutral, "bullish": score.bullish},
        "ts_event": score.ts_event,
        "ts_init": score.ts_init,
    }
