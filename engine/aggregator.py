"""Confidence-weighted, time-decayed vote of news sentiment per symbol."""

from __future__ import annotations

import bisect
from collections import deque

from engine.config import AggregatorSettings
from engine.events import LABEL_TO_SIGNAL, SENTIMENT_LABELS, CompositeSignal, Features, SentimentScore, Signal

# Ties go to HOLD first: with evidence split evenly, doing nothing is the conservative call.
_TIE_ORDER = (Signal.HOLD, Signal.SELL, Signal.BUY)


def score_from_probs(
    news_id: str, symbols: tuple[str, ...], probs: tuple[float, float, float], ts_event: int, ts_init: int
) -> SentimentScore:
    """Turn model probabilities (bearish, neutral, bullish) into a :class:`SentimentScore`."""
    total = sum(probs)
    bearish, neutral, bullish = (p / total for p in probs) if total > 0 else (0.0, 1.0, 0.0)
    best = max(range(3), key=lambda i: (probs[i], -i))
    confidence = (bearish, neutral, bullish)[best]
    return SentimentScore(news_id, symbols, bearish, neutral, bullish, SENTIMENT_LABELS[best], confidence,
                          ts_event, ts_init)


class SignalAggregator:
    """Keeps recent sentiment per symbol and turns it into :class:`CompositeSignal` on demand.

    Each item votes for its label with weight ``confidence * 0.5 ** (age / half_life)``; the votes
    are normalised to sum to one, the winning label is the signal and its share the confidence.
    """

    def __init__(self, settings: AggregatorSettings | None = None) -> None:
        self.settings = settings or AggregatorSettings()
        # Per symbol, scores sorted by (ts_event, arrival) so late news still lands in time order.
        self._scores: dict[str, deque[tuple[int, int, SentimentScore]]] = {}
        self._arrivals = 0

    def add(self, score: SentimentScore) -> None:
        for symbol in score.symbols:
            window = self._scores.setdefault(symbol, deque())
            self._arrivals += 1
            entry = (score.ts_event, self._arrivals, score)
            if not window or window[-1][:2] <= entry[:2]:
                window.append(entry)
            else:
                items = list(window)
                bisect.insort(items, entry, key=lambda e: e[:2])
                window.clear()
                window.extend(items)

    def composite(
        self,
        symbol: str,
        at_ms: int,
        ts_init: int,
        features: Features | None = None,
        *,
        inclusive: bool = False,
    ) -> CompositeSignal:
        """The signal for ``symbol`` decided at ``at_ms``.

        Only news published strictly before ``at_ms`` counts (``inclusive=True`` admits news published
        at ``at_ms`` too, for decisions triggered by that very news) and no older than the window.
        """
        settings = self.settings
        start = at_ms - settings.window_ms
        window = self._scores.get(symbol)
        # Prune a whole window behind, not at ``start``: decisions do not arrive in time order (a bar
        # lands after news scored past its close), and an earlier decision must still see its news.
        while window and window[0][0] < start - settings.window_ms:
            window.popleft()
        votes = {Signal.SELL: 0.0, Signal.HOLD: 0.0, Signal.BUY: 0.0}
        sources = 0
        if window:
            half_life = float(settings.half_life_ms)
            for ts, _, score in window:
                if ts < start:
                    continue
                if ts > at_ms or (ts == at_ms and not inclusive):
                    break
                votes[LABEL_TO_SIGNAL[score.label]] += score.confidence * 0.5 ** ((at_ms - ts) / half_life)
                sources += 1
        total = sum(votes.values())
        if total > 0.0:
            shares = {k: v / total for k, v in votes.items()}
            signal = max(_TIE_ORDER, key=lambda s: shares[s])
            confidence = shares[signal]
        else:
            shares, signal, confidence = votes, Signal.HOLD, 0.0
        actionable = sources >= settings.min_sources and confidence >= settings.threshold
        return CompositeSignal(
            symbol,
            signal,
            confidence,
            shares[Signal.SELL],
            shares[Signal.HOLD],
            shares[Signal.BUY],
            sources,
            actionable,
            features,
            at_ms,
            ts_init,
        )
