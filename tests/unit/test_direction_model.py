"""The direction model: labels, the bar's news window, walk-forward training sets, metrics, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.model.direction import (
    DirectionPredictor,
    DirectionSettings,
    Sample,
    WalkForwardDirectionModel,
    classification_metrics,
    evaluate,
    fit,
    label_of,
    load_model,
    news_folds,
    sample_arrays,
    save_model,
    symbol_samples,
    train_before,
    walk_forward,
)
from engine.events import Bar, Features, Interval
from tests.unit.test_backtest_policies_no_lookahead import HashEmbedder

DAY = 86_400_000


def _bars(closes: list[float]) -> list[Bar]:
    out, prev = [], closes[0]
    for i, c in enumerate(closes):
        out.append(Bar("BTCUSDT", Interval.D1, i * DAY, prev, max(prev, c) + 1, min(prev, c) - 1, c, 5.0,
                       (i + 1) * DAY, (i + 1) * DAY))
        prev = c
    return out


def test_labels_come_from_the_next_bars_return_and_the_flat_band() -> None:
    assert [label_of(r, 0.01) for r in (-0.02, -0.01, 0.0, 0.01, 0.011)] == [0, 1, 1, 1, 2]


def test_a_bars_texts_are_the_news_published_in_its_window_strictly_before_its_close() -> None:
    bars = _bars([100, 102, 99, 99.5])
    news = [(DAY - 1, "a"), (DAY, "b at close 0"), (DAY + 5, "c"), (2 * DAY - 1, "d"), (2 * DAY, "e")]
    samples = symbol_samples(bars, news, Interval.D1, 0.01)
    assert [s.texts for s in samples] == [("a",), ("b at close 0", "c", "d"), ("e",), ()]
    assert [s.label for s in samples] == [2, 0, 1, None]  # +2%, -2.9%, +0.5%, no next bar
    assert [s.label_ts for s in samples] == [2 * DAY, 3 * DAY, 4 * DAY, None]
    assert all(len(s.features) == 10 for s in samples)


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    truth = [0, 0, 1, 2, 2, 2]
    predicted = [0, 2, 1, 2, 2, 0]
    m = classification_metrics(truth, predicted)
    assert m["confusion"] == [[1, 0, 1], [0, 1, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    f1 = [2 * 1 / (2 + 1 + 1), 1.0, 2 * 2 / (4 + 1 + 1)]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["majority_class_accuracy"] == pytest.approx(3 / 6)


def _synthetic(n: int = 240, seed: int = 0) -> list[Sample]:
    """News (from bar 60 on) that says "up" before an up bar: a learnable pattern."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = int(rng.integers(0, 3))
        texts = (("up up" if label == 2 else "down down" if label == 0 else "nothing"),) if i >= 60 and i % 4 else ()
        features = tuple(float(v) for v in rng.normal(size=10))
        samples.append(Sample("BTCUSDT", (i + 1) * DAY, features, texts, label, (i + 2) * DAY))
    return samples


class WordEmbedder(HashEmbedder):
    def embed(self, texts):  # type: ignore[no-untyped-def]
        return np.array([[t.count("up"), t.count("down"), t.count("nothing"), 0, 0, 0, 0, 0] for t in texts],
                        dtype=np.float32).reshape(len(texts), 8)


def test_the_model_learns_a_pattern_in_the_text_and_walk_forward_trains_only_on_known_labels() -> None:
    samples = _synthetic()
    settings = DirectionSettings(epochs=120, hidden=16, folds=3)
    folds = news_folds(samples, 3)
    for fold in folds:
        train = train_before(samples, fold.start_ms)
        assert train and all(s.label_ts is not None and s.label_ts <= fold.start_ms for s in train)
    results = walk_forward(samples, WordEmbedder(), settings, folds)
    assert len(results) == 3
    for _, _, metrics in results[1:]:
        # Three quarters of the bars carry the answer in their news: well above chance (1/3).
        assert metrics["accuracy"] > 0.6 and metrics["macro_f1"] > 0.55
        assert sum(map(sum, metrics["confusion"])) == metrics["samples"]


def test_a_saved_model_loads_back_with_the_same_predictions_and_the_port_picks_each_folds_model(
    tmp_path: Path,
) -> None:
    samples = _synthetic(120)
    embedder = WordEmbedder()
    model = fit(samples, embedder, DirectionSettings(epochs=50, hidden=8))
    save_model(model, tmp_path / "m", {"interval": "1d"})
    loaded = load_model(tmp_path / "m")
    embeddings, numeric = sample_arrays(samples, embedder)
    assert np.allclose(model.probs(embeddings, numeric), loaded.probs(embeddings, numeric), atol=1e-6)
    assert evaluate(loaded, samples, embedder)["samples"] == 120
    features = Features("BTCUSDT", Interval.D1, 0, 1.0, *([0.1] * 10), 10 * DAY, 10 * DAY)
    predictor = DirectionPredictor(loaded, embedder)
    probs = predictor.predict_proba(["up up"], features)
    assert sum(probs) == pytest.approx(1.0) and probs[2] == max(probs)
    walk = WalkForwardDirectionModel([(5 * DAY, predictor)])
    assert walk.predict_proba(["up up"], features) == probs
    early = Features("BTCUSDT", Interval.D1, 0, 1.0, *([0.1] * 10), 4 * DAY, 4 * DAY)
    assert walk.predict_proba(["up up"], early) == (0.0, 1.0, 0.0)  # before any fold: no model, flat
