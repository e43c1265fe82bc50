"""Signal policies: each turns the same evidence into its own signal, through the engine every mode uses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from engine.aggregator import score_from_probs
from engine.config import EngineSettings, PolicySettings
from engine.errors import InvalidInput
from engine.events import Bar, CompositeSignal, Features, Interval, NewsItem, Signal
from engine.pipeline import SignalEngine
from engine.policy import (
    BuyAndHoldPolicy,
    CompositePolicy,
    DirectionPolicy,
    FeaturesPolicy,
    SentimentPolicy,
    build_policy,
)

DAY = 86_400_000


def _features(return_20: float | None, rsi: float | None = 50.0, ts: int = DAY, macd: float | None = None,
              return_5: float | None = None) -> Features:
    return Features("BTCUSDT", Interval.D1, 0, 100.0, 0.01, return_5, return_20, 1.0, 0.02, rsi, macd, 0.5, 0.02,
                    0.0, ts, ts)


def _evidence(signal: Signal = Signal.HOLD, confidence: float = 0.0, actionable: bool = False,
              features: Features | None = None, cause: str = "bar", ts: int = DAY) -> CompositeSignal:
    market = features is not None
    return CompositeSignal("BTCUSDT", signal, confidence, 0.0, 1.0, 0.0, 1, actionable, features, ts, ts, cause,
                           market)


def test_features_policy_follows_the_trend_and_stays_out_past_the_rsi_bands() -> None:
    policy = FeaturesPolicy(PolicySettings())
    up = policy.decide(_evidence(features=_features(0.05, macd=1.0, return_5=0.01)))
    assert up.signal is Signal.BUY and up.actionable and up.confidence == pytest.approx((1 / 3 + 3) / 4)
    down = policy.decide(_evidence(features=_features(-0.05, macd=1.0, return_5=-0.01)))
    assert down.signal is Signal.SELL and down.actionable and down.confidence == pytest.approx((1 / 3 + 2) / 4)
    overbought = policy.decide(_evidence(features=_features(0.05, rsi=75.0)))
    assert overbought.signal is Signal.HOLD and not overbought.actionable
    unknown = policy.decide(_evidence(features=_features(None)))
    assert unknown.signal is Signal.HOLD and not unknown.actionable
    assert not policy.decide(_evidence()).actionable  # no market data


def test_composite_takes_a_news_buy_only_with_the_trend_and_exits_on_news_sell_or_a_falling_trend() -> None:
    policy = CompositePolicy(PolicySettings())
    buy = (Signal.BUY, 0.8, True)
    assert policy.decide(_evidence(*buy, features=_features(0.05))).signal is Signal.BUY
    against = policy.decide(_evidence(*buy, features=_features(-0.05)))
    assert against.signal is Signal.SELL and against.actionable  # the falling trend exits instead
    flat_news = policy.decide(_evidence(features=_features(0.05)))
    assert flat_news.signal is Signal.HOLD and not flat_news.actionable  # a rising trend alone does not buy
    sell = policy.decide(_evidence(Signal.SELL, 0.8, True, features=_features(0.05)))
    assert sell.signal is Signal.SELL and sell.actionable
    overbought = policy.decide(_evidence(*buy, features=_features(0.05, rsi=80.0)))
    assert overbought.signal is Signal.HOLD and not overbought.actionable


def test_buy_and_hold_is_long_once_there_is_market_data_and_sentiment_passes_the_vote_through() -> None:
    assert BuyAndHoldPolicy().decide(_evidence(features=_features(0.0))).actionable
    assert not BuyAndHoldPolicy().decide(_evidence()).actionable
    evidence = _evidence(Signal.SELL, 0.75, True, features=_features(0.0))
    assert SentimentPolicy().decide(evidence) is evidence


class _RecordingModel:
    def __init__(self, probs: tuple[float, float, float]) -> None:
        self.probs = probs
        self.calls: list[tuple[list[str], int]] = []

    def predict_proba(self, texts: Sequence[str], features: Features) -> tuple[float, float, float]:
        self.calls.append((list(texts), features.ts_event))
        return self.probs


def _news(ts: int, text: str) -> NewsItem:
    return NewsItem(text, "t", text, "", ("BTCUSDT",), (), "", ts, ts)


def test_direction_policy_reads_only_the_bars_window_strictly_before_the_close() -> None:
    model = _RecordingModel((0.1, 0.2, 0.7))
    policy = DirectionPolicy(model, DAY, threshold=0.45)
    for ts, text in ((DAY // 2, "too old"), (DAY + 1, "in"), (2 * DAY - 1, "last in"), (2 * DAY, "at the close")):
        policy.on_news(_news(ts, text))
    signal = policy.decide(_evidence(features=_features(0.0, ts=2 * DAY), ts=2 * DAY))
    assert model.calls[-1][0] == ["in", "last in"]
    assert signal.signal is Signal.BUY and signal.actionable and signal.confidence == pytest.approx(0.7)
    # A decision triggered by news includes that news (published at the decision time).
    policy.decide(_evidence(features=_features(0.0, ts=2 * DAY), cause="news:x", ts=2 * DAY))
    assert model.calls[-1][0] == ["in", "last in", "at the close"]
    weak = DirectionPolicy(_RecordingModel((0.3, 0.3, 0.4)), DAY, threshold=0.45)
    assert not weak.decide(_evidence(features=_features(0.0))).actionable
    flat = DirectionPolicy(_RecordingModel((0.2, 0.6, 0.2)), DAY, threshold=0.45)
    assert flat.decide(_evidence(features=_features(0.0))).signal is Signal.HOLD


def test_the_engine_builds_its_policy_from_settings_and_direction_needs_its_model() -> None:
    for name, cls in (("sentiment", SentimentPolicy), ("features", FeaturesPolicy), ("composite", CompositePolicy),
                      ("buy_and_hold", BuyAndHoldPolicy)):
        engine = SignalEngine(EngineSettings(interval=Interval.D1, policy=PolicySettings(name=name)))
        assert isinstance(engine.policy, cls) and engine.policy.name == name
    import sigstream.modes.direction  # noqa: F401 - registers the direction builder, as the CLI does

    with pytest.raises(InvalidInput, match="--policy-model"):
        build_policy(EngineSettings(policy=PolicySettings(name="direction")))


def test_the_engines_bar_and_news_decisions_both_go_through_the_policy() -> None:
    engine = SignalEngine(EngineSettings(interval=Interval.D1, policy=PolicySettings(name="buy_and_hold")))
    (signal,) = engine.on_sentiment(score_from_probs("n", ("BTCUSDT",), (0.9, 0.05, 0.05), 0, 0))
    assert signal.market_data is False and signal.signal is Signal.HOLD  # no bar yet: no market data
    decided = engine.on_bar(Bar("BTCUSDT", Interval.D1, 0, 100, 101, 99, 100, 1.0, DAY, DAY))
    assert decided is not None and decided[1].signal is Signal.BUY and decided[1].actionable
    (after,) = engine.on_sentiment(score_from_probs("m", ("BTCUSDT",), (0.9, 0.05, 0.05), DAY + 1, DAY + 1))
    assert after.signal is Signal.BUY and after.market_data
