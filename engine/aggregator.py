"""Confidence-weighted, time-decayed vote of news sentiment per symbol."""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from engine.config import AggregatorSettings
from engine.events import LABEL_TO_SIGNAL, SENTIMENT_LABELS, CompositeSignal, Features, SentimentScore, Signal
from engine.state import (
    corrupt,
    decode_dict,
    decode_float,
    decode_int,
    decode_list,
    decode_str,
    encode_float,
)

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

    Each item votes for its label with weight ``w = confidence * 0.5 ** (age / half_life)``; the votes are
    normalised into the shares (``scores``) and the label with the largest share is the signal.

    The confidence weighs how much evidence stands behind that share. With ``W_k`` the summed decayed
    weight for label ``k`` and ``W = W_SELL + W_HOLD + W_BUY``, the label probabilities get a symmetric
    Dirichlet prior of total mass ``a = prior_strength`` (``a/3`` per label); the posterior mean of the
    winner is the confidence::

        confidence = (a/3 + W_win) / (a + W)

    Each item adds at most 1 to ``W`` (its model confidence, decayed), so the number of items and their
    freshness both count: one item alone stays below ``(1/3 + 1) / 2 = 0.667`` with the default ``a = 1``, two
    fresh unanimous items of confidence 0.9 reach 0.76, and the confidence tends to the vote share as
    evidence grows. ``actionable`` needs BUY or SELL (never HOLD), ``num_sources >= min_sources``, the
    confidence at or above ``threshold``, and market data for the symbol unless ``news_only``.
    """

    def __init__(self, settings: AggregatorSettings | None = None) -> None:
        self.settings = settings or AggregatorSettings()
        # Per symbol, scores sorted by (ts_event, arrival) so late news still lands in time order.
        self._scores: dict[str, deque[tuple[int, int, SentimentScore]]] = {}
        self._arrivals = 0

    def add(self, score: SentimentScore, symbols: tuple[str, ...] | None = None) -> None:
        """Count ``score`` toward ``symbols`` (default: every symbol it names)."""
        for symbol in score.symbols if symbols is None else symbols:
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
        cause: str = "bar",
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
            prior = settings.prior_strength
            confidence = (prior / 3.0 + votes[signal]) / (prior + total)
        else:
            shares, signal, confidence = votes, Signal.HOLD, 0.0
        market_data = features is not None
        actionable = (
            signal is not Signal.HOLD
            and sources >= settings.min_sources
            and confidence >= settings.threshold
            and (market_data or settings.news_only)
        )
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
            cause,
            market_data,
        )

    # -- snapshots (engine.state) ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The windows and the arrival counter, JSON-ready.

        ``{"arrivals": n, "scores": [score, ...], "windows": {symbol: [[ts_event, arrival, score index], ...]}}``:
        a score counted toward several symbols is written once and referenced by its index in ``scores``,
        each as ``[news_id, symbols, bearish, neutral, bullish, label, confidence, ts_event, ts_init]``.
        """
        index: dict[int, int] = {}
        scores: list[list[Any]] = []
        windows: dict[str, list[list[int]]] = {}
        for symbol, window in self._scores.items():
            rows = windows[symbol] = []
            for ts, arrival, score in window:
                i = index.get(id(score))
                if i is None:
                    i = index[id(score)] = len(scores)
                    scores.append([
                        score.news_id, list(score.symbols), encode_float(score.bearish), encode_float(score.neutral),
                        encode_float(score.bullish), score.label, encode_float(score.confidence), score.ts_event,
                        score.ts_init,
                    ])  # fmt: skip
                rows.append([ts, arrival, i])
        return {"arrivals": self._arrivals, "scores": scores, "windows": windows}

    def restore_state(self, state: object) -> None:
        """Replace the windows and counter with those :meth:`state` describes.

        Raises:
            InvalidInput: ``state`` is not one (nothing is changed then).
        """
        what = "aggregator"
        s = decode_dict(state, what, ("arrivals", "scores", "windows"))
        arrivals = decode_int(s["arrivals"], f"{what} arrivals")
        scores = [_score_from_state(row, f"{what} score {i}") for i, row in enumerate(decode_list(s["scores"], what))]
        windows: dict[str, deque[tuple[int, int, SentimentScore]]] = {}
        for symbol, rows in decode_dict(s["windows"], f"{what} windows").items():
            where = f"{what} window of {symbol}"
            window: deque[tuple[int, int, SentimentScore]] = deque()
            previous: tuple[int, int] | None = None
            for row in decode_list(rows, where):
                ts, arrival, i = (decode_int(v, where) for v in decode_list(row, where, 3))
                if not 0 <= i < len(scores):
                    raise corrupt(where, f"score index {i} of {len(scores)}")
                if not 0 < arrival <= arrivals or (previous is not None and (ts, arrival) <= previous):
                    raise corrupt(where, f"entry ({ts}, {arrival}) out of order or past arrival {arrivals}")
                previous = (ts, arrival)
                window.append((ts, arrival, scores[i]))
            windows[symbol] = window
        self._scores = windows
        self._arrivals = arrivals


def _score_from_state(state: object, what: str) -> SentimentScore:
    s = decode_list(state, what, 9)
    label = decode_str(s[5], what)
    if label not in SENTIMENT_LABELS:
        raise corrupt(what, f"unknown label {label!r}")
    symbols = tuple(decode_str(v, what) for v in decode_list(s[1], what))
    return SentimentScore(
        decode_str(s[0], what),
        symbols,
        decode_float(s[2], what),
        decode_float(s[3], what),
        decode_float(s[4], what),
        label,
        decode_float(s[6], what),
        decode_int(s[7], what),
        decode_int(s[8], what),
    )
