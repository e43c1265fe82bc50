"""Composite signal: confidence-weighted vote with exponential time decay."""

from __future__ import annotations

import pytest

from engine.aggregator import SignalAggregator, score_from_probs
from engine.config import AggregatorSettings
from engine.events import Features, Interval, Signal

HOUR = 3_600_000


def _features(symbol: str = "BTCUSDT") -> Features:
    return Features(symbol, Interval.D1, 0, 100.0, *([None] * 10), 1, 1)


def _score(label_probs, ts, symbol="BTCUSDT", news_id="n"):
    return score_from_probs(news_id, (symbol,), label_probs, ts, ts)


def test_votes_are_weighted_by_confidence_and_normalised() -> None:
    agg = SignalAggregator(AggregatorSettings(half_life_ms=10**12))  # effectively no decay
    agg.add(_score((0.1, 0.1, 0.8), 0, news_id="a"))  # BUY, confidence 0.8
    agg.add(_score((0.6, 0.3, 0.1), 0, news_id="b"))  # SELL, confidence 0.6
    signal = agg.composite("BTCUSDT", HOUR, HOUR)
    assert signal.signal is Signal.BUY
    assert signal.score_buy == pytest.approx(0.8 / 1.4, rel=1e-6)
    assert signal.score_sell == pytest.approx(0.6 / 1.4, rel=1e-6)
    assert signal.num_sources == 2
    assert signal.actionable is False  # 0.571 < 0.7


def test_older_news_weighs_less_by_half_life() -> None:
    agg = SignalAggregator(AggregatorSettings(half_life_ms=HOUR, window_ms=24 * HOUR))
    agg.add(_score((0.1, 0.1, 0.8), 0, news_id="old-buy"))
    agg.add(_score((0.8, 0.1, 0.1), HOUR, news_id="new-sell"))
    signal = agg.composite("BTCUSDT", 2 * HOUR, 2 * HOUR)
    # old: 0.8 * 0.25, new: 0.8 * 0.5
    assert signal.signal is Signal.SELL
    assert signal.score_sell == pytest.approx(0.4 / 0.6)
    # Dirichlet posterior mean with prior mass 1: (1/3 + 0.4) / (1 + 0.6)
    assert signal.confidence == pytest.approx((1 / 3 + 0.4) / 1.6)


def test_news_outside_window_or_not_strictly_before_decision_is_ignored() -> None:
    agg = SignalAggregator(AggregatorSettings(window_ms=HOUR))
    agg.add(_score((0.1, 0.1, 0.8), 0, news_id="too-old"))
    agg.add(_score((0.8, 0.1, 0.1), 5 * HOUR, news_id="at-decision"))
    signal = agg.composite("BTCUSDT", 5 * HOUR, 5 * HOUR)
    assert signal.num_sources == 0 and signal.signal is Signal.HOLD and signal.confidence == 0.0
    inclusive = agg.composite("BTCUSDT", 5 * HOUR, 5 * HOUR, inclusive=True)
    assert inclusive.signal is Signal.SELL and inclusive.num_sources == 1


def test_a_single_item_is_never_actionable_but_two_agreeing_fresh_items_are() -> None:
    agg = SignalAggregator(AggregatorSettings(threshold=0.7))
    agg.add(_score((0.0, 0.0, 1.0), 0, news_id="a"))
    one = agg.composite("BTCUSDT", 1, 1, _features())
    # Even a certain item: (1/3 + 1) / (1 + 1) = 0.667, below the threshold and far below 0.99.
    assert one.signal is Signal.BUY and one.confidence == pytest.approx(2 / 3, rel=1e-4) and not one.actionable
    agg.add(_score((0.05, 0.05, 0.9), 0, news_id="b"))
    two = agg.composite("BTCUSDT", 1, 1, _features())
    assert two.actionable and two.signal is Signal.BUY and two.num_sources == 2
    assert two.confidence == pytest.approx((1 / 3 + 1.9) / 2.9, rel=1e-4)


def test_confidence_grows_with_evidence_toward_the_vote_share() -> None:
    confidences = []
    for n in (1, 2, 4, 8, 32):
        agg = SignalAggregator(AggregatorSettings(half_life_ms=10**12))
        for i in range(n):
            agg.add(_score((0.1, 0.1, 0.8), 0, news_id=f"n{i}"))
        confidences.append(agg.composite("BTCUSDT", 1, 1).confidence)
    assert confidences == sorted(confidences) and confidences[-1] > 0.97
    assert confidences[0] == pytest.approx((1 / 3 + 0.8) / 1.8)
    # Decay lowers the evidence: the same item a half-life old counts half.
    fresh, old = SignalAggregator(), SignalAggregator()
    fresh.add(_score((0.1, 0.1, 0.8), 0))
    old.add(_score((0.1, 0.1, 0.8), 0))
    half = AggregatorSettings().half_life_ms
    assert old.composite("BTCUSDT", half, half).confidence == pytest.approx((1 / 3 + 0.4) / 1.4)
    assert fresh.composite("BTCUSDT", 1, 1).confidence > old.composite("BTCUSDT", half, half).confidence


def test_hold_is_never_actionable_however_strong() -> None:
    agg = SignalAggregator(AggregatorSettings(threshold=0.5))
    for i in range(20):
        agg.add(_score((0.0, 1.0, 0.0), 0, news_id=f"n{i}"))
    signal = agg.composite("BTCUSDT", 1, 1, _features())
    assert signal.signal is Signal.HOLD and signal.confidence > 0.9 and not signal.actionable


def test_a_symbol_without_market_data_is_marked_and_acts_only_when_news_only_is_asked_for() -> None:
    for news_only in (False, True):
        agg = SignalAggregator(AggregatorSettings(news_only=news_only))
        for i in range(5):
            agg.add(_score((0.9, 0.05, 0.05), 0, symbol="SOLUSDT", news_id=f"n{i}"))
        without = agg.composite("SOLUSDT", 1, 1, None)
        assert without.market_data is False and without.signal is Signal.SELL and without.confidence > 0.7
        assert without.actionable is news_only
        with_prices = agg.composite("SOLUSDT", 1, 1, _features("SOLUSDT"))
        assert with_prices.market_data is True and with_prices.actionable


def test_late_news_is_inserted_in_publish_order() -> None:
    agg = SignalAggregator(AggregatorSettings(window_ms=HOUR, half_life_ms=HOUR))
    agg.add(_score((0.1, 0.1, 0.8), 3 * HOUR, news_id="late-arrival-newer"))
    agg.add(_score((0.8, 0.1, 0.1), int(2.5 * HOUR), news_id="older"))
    signal = agg.composite("BTCUSDT", int(3.5 * HOUR), 0)
    assert signal.num_sources == 2


def test_score_from_probs_labels_and_confidence() -> None:
    score = score_from_probs("x", ("ETHUSDT",), (0.2, 0.5, 0.3), 1, 2)
    assert score.label == "neutral" and score.confidence == pytest.approx(0.5)
    assert score.signal is Signal.HOLD


def test_a_later_decision_does_not_take_news_away_from_an_earlier_one() -> None:
    # Live, a bar can arrive after news scored past the bar's close: the news-triggered decision comes
    # first but is later in time. The bar's decision must still count the news inside its own window.
    agg = SignalAggregator(AggregatorSettings(window_ms=24 * HOUR))
    agg.add(_score((0.1, 0.1, 0.8), 0, news_id="old-buy"))
    assert agg.composite("BTCUSDT", 24 * HOUR + 1, 24 * HOUR + 1).num_sources == 0  # out of its window
    bar = agg.composite("BTCUSDT", 24 * HOUR - 1, 24 * HOUR - 1)
    assert bar.num_sources == 1 and bar.signal is Signal.BUY
    # Memory stays bounded: two windows behind the newest decision, the item is gone.
    agg.composite("BTCUSDT", 49 * HOUR, 49 * HOUR)
    assert agg.composite("BTCUSDT", 24 * HOUR - 1, 24 * HOUR - 1).num_sources == 0
