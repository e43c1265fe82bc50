"""No look-ahead for every policy: rewriting everything after T changes no decision, fill or equity up to T.

The direction policy is checked twice: with a fixed model, and trained walk-forward inside the backtest the way
``sigstream backtest --policies direction`` does without ``--policy-model`` (each fold's model fitted only on bars
whose next bar had closed by the fold's start), so a rewrite of the future retrains later folds but no earlier one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from adapters.model.direction import (
    DirectionPredictor,
    DirectionSettings,
    WalkForwardDirectionModel,
    build_samples,
    fit,
    train_before,
)
from engine.backtest import BacktestResult, BacktestSettings
from engine.backtest.study import walk_forward_folds
from engine.config import PolicySettings, SymbolMapSettings
from engine.events import Bar, Features, Interval, NewsItem
from engine.policy import BuyAndHoldPolicy, CompositePolicy, DirectionPolicy, FeaturesPolicy, SentimentPolicy
from engine.ports import SignalPolicy
from engine.symbols import SymbolMapper
from tests.support.backtest import DAY, SYMBOL, T0, backtest, in_time_order
from tests.unit.test_backtest_no_lookahead import _market, _rewrite_after

START = T0 + 15 * DAY
END = T0 + 45 * DAY


class HashEmbedder:
    """A deterministic stand-in for the encoder: 8 numbers from each text's hash."""

    dim = 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], dtype=np.uint8) / 255.0 for t in texts]
        return np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)

    def save(self) -> None:
        return None  # nothing to keep


class WordModel:
    """A fixed direction model: bullish words and a rising close say up."""

    def predict_proba(self, texts: Sequence[str], features: Features) -> tuple[float, float, float]:
        words = " ".join(texts).lower()
        score = sum(words.count(w) for w in ("surge", "rally", "jump")) - sum(
            words.count(w) for w in ("plunge", "crash", "ban")
        )
        score += 1 if (features.return_1 or 0.0) > 0 else -1
        if score > 0:
            return (0.1, 0.2, 0.7)
        if score < 0:
            return (0.7, 0.2, 0.1)
        return (0.2, 0.6, 0.2)


def _walk_forward_direction(bars: list[Bar], news: list[NewsItem]) -> DirectionPolicy:
    settings = DirectionSettings(epochs=30, hidden=8)
    embedder = HashEmbedder()
    samples = build_samples({SYMBOL: bars}, news, Interval.D1, SymbolMapper(SymbolMapSettings()), 0.01)
    models = []
    for fold in walk_forward_folds(START, END, 3, DAY):
        models.append((fold.start_ms, DirectionPredictor(fit(train_before(samples, fold.start_ms), embedder,
                                                                 settings), embedder)))
    return DirectionPolicy(WalkForwardDirectionModel(models), DAY, threshold=0.4)


POLICIES = ("sentiment", "features", "composite", "buy_and_hold", "direction", "direction_walk_forward")


def _policy(name: str, bars: list[Bar], news: list[NewsItem]) -> SignalPolicy:
    match name:
        case "sentiment":
            return SentimentPolicy()
        case "features":
            return FeaturesPolicy(PolicySettings(trend_feature="return_5"))
        case "composite":
            return CompositePolicy(PolicySettings(trend_feature="return_5"))
        case "buy_and_hold":
            return BuyAndHoldPolicy()
        case "direction":
            return DirectionPolicy(WordModel(), DAY, threshold=0.5)
        case "direction_walk_forward":
            return _walk_forward_direction(bars, news)
    raise AssertionError(name)


def _run(name: str, bars: list[Bar], news: list[NewsItem], *, news_first: bool) -> BacktestResult:
    return backtest(
        in_time_order(bars, news, news_first=news_first),
        BacktestSettings(position_size=0.5),
        threshold=0.6,
        start_ms=START,
        end_ms=END,
        policy=_policy(name, bars, news),
    )


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("cut_day", [23, 31])
def test_changing_the_future_changes_no_past_trade_for_every_policy(name: str, cut_day: int) -> None:
    bars, news = _market(seed=11)
    cut = T0 + cut_day * DAY
    original = _run(name, bars, news, news_first=False)
    changed_bars, changed_news = _rewrite_after(bars, news, cut, seed=cut_day)
    changed = _run(name, changed_bars, changed_news, news_first=True)

    assert [d for d in original.decisions if d.ts <= cut] == [d for d in changed.decisions if d.ts <= cut]
    assert [f for f in original.fills if f.ts <= cut] == [f for f in changed.fills if f.ts <= cut]
    assert [p for p in original.points if p.ts <= cut] == [p for p in changed.points if p.ts <= cut]
    # The rewrite reached the run, and the policy traded before the cut: the comparison is not vacuous.
    assert original.points[-1].equity != changed.points[-1].equity
    assert any(f.ts <= cut for f in original.fills), f"{name} never traded before the cut"
