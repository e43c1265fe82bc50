"""Signal policies: how the evidence at a decision (news vote, features) becomes the published signal.

Every mode builds its :class:`engine.pipeline.SignalEngine` from settings, and the engine builds its policy here
(:func:`build_policy`), so replay, backtest, ``sigstream run`` and the worker decide through the same code.
Policies that need an outside model (``direction``) are registered by the composition root
(:func:`register_policy`), the way venues register their codecs: the engine stays free of torch.

* ``sentiment``: the news vote as the aggregator decided it (evidence-aware confidence).
* ``features``: a trend and RSI filter on the ten features alone.
* ``composite``: news BUY only with the trend (and RSI below overbought); exit on news SELL or a falling trend.
* ``buy_and_hold``: always long once the symbol has market data; the benchmark, as a policy.
* ``direction``: the text + features model's next-bar Down/Flat/Up (:class:`DirectionPolicy`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import msgspec

from engine.config import EngineSettings, PolicySettings
from engine.errors import InvalidInput
from engine.events import CompositeSignal, Features, NewsItem, Signal
from engine.ports import DirectionModel, SignalPolicy

# The trend indicators the features policy counts; each votes for BUY (> 0) or SELL (< 0).
_TREND_VOTES = ("return_20", "return_5", "macd")


def _replace(evidence: CompositeSignal, signal: Signal, confidence: float, actionable: bool) -> CompositeSignal:
    return msgspec.structs.replace(evidence, signal=signal, confidence=confidence, actionable=actionable)


def _hold(evidence: CompositeSignal, confidence: float = 0.0) -> CompositeSignal:
    return _replace(evidence, Signal.HOLD, confidence, False)


class SentimentPolicy:
    """The aggregator's news vote, unchanged."""

    name = "sentiment"

    def on_news(self, item: NewsItem) -> None:
        return None  # the vote already holds the scored news

    def decide(self, evidence: CompositeSignal) -> CompositeSignal:
        return evidence


class FeaturesPolicy:
    """Trend following on the features alone: long while the trend is up and RSI is below overbought, flat
    (or short) while it is down and RSI is above oversold.

    The trend is the sign of ``trend_feature`` (``return_20`` by default). The confidence counts how many of
    the trend indicators (20- and 5-bar returns, MACD) agree, with the aggregator's Dirichlet prior of mass
    1: ``(1/3 + agreeing) / (1 + defined)``, so it is at most 0.83.
    """

    name = "features"

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    def on_news(self, item: NewsItem) -> None:
        return None  # prices only

    def trend(self, features: Features | None) -> Signal:
        """BUY (up), SELL (down) or HOLD (unknown, flat, or RSI past its band)."""
        if features is None:
            return Signal.HOLD
        value = getattr(features, self.settings.trend_feature)
        rsi = features.rsi_14
        if value is None or value == 0.0:
            return Signal.HOLD
        if value > 0:
            return Signal.BUY if rsi is None or rsi < self.settings.rsi_overbought else Signal.HOLD
        return Signal.SELL if rsi is None or rsi > self.settings.rsi_oversold else Signal.HOLD

    def decide(self, evidence: CompositeSignal) -> CompositeSignal:
        features = evidence.features
        side = self.trend(features)
        if side is Signal.HOLD or features is None:
            return _hold(evidence)
        votes = [getattr(features, name) for name in _TREND_VOTES]
        defined = [v for v in votes if v is not None]
        agreeing = sum((v > 0) if side is Signal.BUY else (v < 0) for v in defined)
        return _replace(evidence, side, (1.0 / 3.0 + agreeing) / (1.0 + len(defined)), True)


class CompositePolicy:
    """News gated by the numbers: an actionable news BUY is taken only while the trend is not down and RSI is
    below overbought; an actionable news SELL, or a falling trend, exits (or shorts)."""

    name = "composite"

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._features = FeaturesPolicy(settings)

    def on_news(self, item: NewsItem) -> None:
        return None  # the vote already holds the scored news

    def decide(self, evidence: CompositeSignal) -> CompositeSignal:
        features = evidence.features
        if evidence.actionable and evidence.signal is Signal.SELL:
            return evidence
        trend = self._features.decide(evidence)
        if trend.actionable and trend.signal is Signal.SELL:
            return trend
        if evidence.actionable and evidence.signal is Signal.BUY and features is not None:
            rsi = features.rsi_14
            value = getattr(features, self.settings.trend_feature)
            if (value is None or value >= 0.0) and (rsi is None or rsi < self.settings.rsi_overbought):
                return evidence
        return _hold(evidence, evidence.confidence if evidence.signal is Signal.HOLD else 0.0)


class BuyAndHoldPolicy:
    """Always long once the symbol has market data (the benchmark, run through the same engine and broker)."""

    name = "buy_and_hold"

    def on_news(self, item: NewsItem) -> None:
        return None

    def decide(self, evidence: CompositeSignal) -> CompositeSignal:
        if not evidence.market_data:
            return _hold(evidence)
        return _replace(evidence, Signal.BUY, 1.0, True)


_DIRECTION_SIGNALS = (Signal.SELL, Signal.HOLD, Signal.BUY)  # down, flat, up


class DirectionPolicy:
    """The direction model's call: Up -> BUY, Down -> SELL, Flat -> HOLD, from the news published in the
    bar's window (``window_ms`` before the decision, strictly before a bar close) and the latest features.

    The confidence is the model's probability of the winning class; it acts (``actionable``) on Up or Down
    at or above ``threshold``. Without market data it holds. The texts it keeps are bounded to two windows
    behind the newest news (decisions can arrive a little out of time order live).
    """

    name = "direction"

    def __init__(self, model: DirectionModel, window_ms: int, threshold: float) -> None:
        self.model = model
        self.window_ms = window_ms
        self.threshold = threshold
        self._news: dict[str, deque[tuple[int, str]]] = {}

    def on_news(self, item: NewsItem) -> None:
        for symbol in item.symbols:
            window = self._news.setdefault(symbol, deque())
            window.append((item.ts_event, item.text))
            while window and window[0][0] < item.ts_event - 2 * self.window_ms:
                window.popleft()

    def texts(self, symbol: str, at_ms: int, *, inclusive: bool) -> list[str]:
        """Texts published in ``[at_ms - window_ms, at_ms)`` (``]`` with ``inclusive``), in publish order."""
        start = at_ms - self.window_ms
        window = self._news.get(symbol, ())
        timed = sorted(
            (ts, i, text)
            for i, (ts, text) in enumerate(window)
            if start <= ts and (ts < at_ms or (inclusive and ts == at_ms))
        )
        return [text for _, _, text in timed]

    def decide(self, evidence: CompositeSignal) -> CompositeSignal:
        features = evidence.features
        if features is None or not evidence.market_data:
            return _hold(evidence)
        texts = self.texts(evidence.symbol, evidence.ts_event, inclusive=evidence.cause != "bar")
        probs = self.model.predict_proba(texts, features)
        best = max(range(3), key=lambda i: (probs[i], i == 1))  # a tie goes to flat
        signal = _DIRECTION_SIGNALS[best]
        confidence = probs[best]
        return _replace(evidence, signal, confidence, signal is not Signal.HOLD and confidence >= self.threshold)


PolicyBuilder = Callable[[EngineSettings], SignalPolicy]

_BUILDERS: dict[str, PolicyBuilder] = {
    "sentiment": lambda _settings: SentimentPolicy(),
    "features": lambda settings: FeaturesPolicy(settings.policy),
    "composite": lambda settings: CompositePolicy(settings.policy),
    "buy_and_hold": lambda _settings: BuyAndHoldPolicy(),
}


def register_policy(name: str, builder: PolicyBuilder) -> None:
    """Make ``name`` buildable from settings (the composition root registers ``direction``)."""
    _BUILDERS[name] = builder


def build_policy(settings: EngineSettings) -> SignalPolicy:
    """The policy ``settings.policy.name`` names.

    Raises:
        InvalidInput: the policy needs a model that is not available (``direction`` without a registered
            builder or a ``model_dir``).
    """
    name = settings.policy.name
    builder = _BUILDERS.get(name)
    if builder is None:
        raise InvalidInput(f"policy {name!r} is not available in this process (its model adapter is not loaded)")
    return builder(settings)
