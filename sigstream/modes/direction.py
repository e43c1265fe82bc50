"""Wiring for ``sigstream direction``: price and news files in, the walk-forward direction model out.

Also builds the ``direction`` policy for every other mode: :func:`register_direction_policy` registers a builder
with :mod:`engine.policy`, so an engine whose settings name ``direction`` (``SIGSTREAM_ENGINE__POLICY__NAME``,
``--policy direction``) loads the model from ``engine.policy.model_dir`` in replay, run, the worker and the
backtest alike.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.files.config import FilesSettings
from adapters.files.source import KlineCsvSource, NewsCsvSource, detect_source, pair_from_filename
from engine.config import EngineSettings, SymbolMapSettings
from engine.errors import InvalidInput
from engine.events import Bar, Interval, NewsItem
from engine.policy import DirectionPolicy, register_policy
from engine.symbols import SymbolMapper

if TYPE_CHECKING:
    from adapters.model.config import ModelSettings
    from adapters.model.direction import DirectionSettings, Sample, TextEmbedder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MarketFiles:
    """Bars per symbol and the news, read and checked."""

    bars: dict[str, list[Bar]]
    news: list[NewsItem]
    news_dead_letters: int


def read_market_files(
    prices: Sequence[Path], news: Sequence[Path], interval: Interval, files: FilesSettings,
    symbols: Sequence[str] | None = None,
) -> MarketFiles:
    """Kline CSVs (one symbol each, named like ``BTCUSDT_1d.csv``) and news CSVs."""
    if not prices:
        raise InvalidInput("--prices: give at least one kline CSV")
    bars: dict[str, list[Bar]] = {}
    for path in prices:
        if not path.is_file():
            raise InvalidInput(f"--prices {path}: no such file")
        source = detect_source(path, interval=interval, settings=files)
        if not isinstance(source, KlineCsvSource):
            raise InvalidInput(f"--prices {path} is not a kline CSV")
        symbol = pair_from_filename(path) or source.symbol
        if symbol in bars:
            raise InvalidInput(f"--prices: two files for {symbol}")
        bars[symbol] = source.bars()
    if symbols:
        unknown = [s for s in symbols if s not in bars]
        if unknown:
            raise InvalidInput(f"--symbols {','.join(unknown)}: no --prices file for it (have {','.join(bars)})")
        bars = {s: bars[s] for s in symbols}
    items: list[NewsItem] = []
    dead = 0
    for path in news:
        if not path.is_file():
            raise InvalidInput(f"--news {path}: no such file")
        source = detect_source(path, interval=interval, settings=files)
        if not isinstance(source, NewsCsvSource):
            raise InvalidInput(f"--news {path} is not a news CSV")
        for item in source.items():
            if isinstance(item, NewsItem):
                items.append(item)
            else:
                dead += 1
    return MarketFiles(bars, items, dead)


def samples_for(market: MarketFiles, interval: Interval, symbol_map: SymbolMapSettings,
                settings: DirectionSettings) -> list[Sample]:
    from adapters.model.direction import build_samples

    return build_samples(market.bars, market.news, interval, SymbolMapper(symbol_map), settings.flat_threshold)


def encoder(model: ModelSettings, cache_dir: Path | None) -> TextEmbedder:
    from adapters.model.direction import EncoderEmbedder

    return EncoderEmbedder(model, cache_dir)


def embed_all(embedder: TextEmbedder, samples: Sequence[Sample]) -> float:
    """Embed every text once up front (cached); returns the seconds it took."""
    started = time.perf_counter()
    texts = list(dict.fromkeys(t for s in samples for t in s.texts))
    for i in range(0, len(texts), 512):
        embedder.embed(texts[i : i + 512])
    embedder.save()
    return time.perf_counter() - started


def train_direction(
    market: MarketFiles,
    interval: Interval,
    engine: EngineSettings,
    settings: DirectionSettings,
    embedder: TextEmbedder,
    out: Path,
) -> dict[str, Any]:
    """Walk-forward evaluation over the news period, then the final model on everything, saved in ``out``."""
    from adapters.model.direction import METRICS_FILE, fit, news_folds, save_model, walk_forward, write_json

    started = time.perf_counter()
    samples = samples_for(market, interval, engine.symbols, settings)
    embed_s = embed_all(embedder, samples)
    folds = walk_forward(samples, embedder, settings, news_folds(samples, settings.folds))
    final = fit(samples, embedder, settings)
    report = {
        "interval": interval.value,
        "symbols": list(market.bars),
        "samples": len(samples),
        "samples_with_news": sum(bool(s.texts) for s in samples),
        "news_items": len(market.news),
        "news_dead_letters": market.news_dead_letters,
        "embedder": getattr(embedder, "description", type(embedder).__name__),
        "settings": settings.model_dump(),
        "folds": [m for _, _, m in folds],
        "seconds": {"embeddings": round(embed_s, 1), "total": round(time.perf_counter() - started, 1)},
    }
    meta = {"interval": interval.value, "symbols": list(market.bars), "embedder": report["embedder"],
            "walk_forward": report["folds"]}
    save_model(final, out, meta)
    write_json(out / METRICS_FILE, report)
    return report


def evaluate_direction(
    market: MarketFiles,
    interval: Interval,
    engine: EngineSettings,
    settings: DirectionSettings,
    embedder: TextEmbedder,
    model_dir: Path | None,
) -> dict[str, Any]:
    """Walk-forward folds (trained per fold on the past) or, with ``model_dir``, that model on every fold."""
    from adapters.model.direction import evaluate, in_fold, load_model, news_folds, walk_forward

    samples = samples_for(market, interval, engine.symbols, settings)
    embed_all(embedder, samples)
    spans = news_folds(samples, settings.folds)
    if model_dir is None:
        rows = [m for _, _, m in walk_forward(samples, embedder, settings, spans)]
    else:
        model = load_model(model_dir)
        rows = []
        for fold in spans:
            m = evaluate(model, [s for s in samples if in_fold(s, fold, fold.index == len(spans) - 1)], embedder)
            m.update({"fold": fold.index, "start_ts": fold.start_ms, "end_ts": fold.end_ms})
            if model.trained_until is not None and model.trained_until > fold.start_ms:
                m["in_sample"] = True  # the model saw labels from this fold: not an out-of-sample figure
            rows.append(m)
    return {"interval": interval.value, "symbols": list(market.bars), "model": str(model_dir) if model_dir else None,
            "folds": rows}


# -- the policy, for every mode -----------------------------------------------------------------------------
@functools.cache
def _predictor(model_dir: str) -> Any:
    """One model and one encoder per folder, shared by every engine of the process (a worker has one engine per
    partition). The encoder is the one the model settings name (``SIGSTREAM_MODEL__*``): the model was trained on
    its embeddings, and ``direction.json`` records which it was."""
    from adapters.model.direction import DirectionPredictor, EncoderEmbedder, load_model, read_meta
    from sigstream.settings import load_settings

    embedder = EncoderEmbedder(load_settings().model)
    trained_with = read_meta(Path(model_dir)).get("embedder")
    if trained_with and trained_with != embedder.description:
        log.warning("direction model %s was trained on %s embeddings, serving %s", model_dir, trained_with,
                    embedder.description)
    return DirectionPredictor(load_model(Path(model_dir)), embedder)


def build_direction_policy(settings: EngineSettings) -> DirectionPolicy:
    """The ``direction`` policy of ``settings.policy.model_dir``."""
    folder = settings.policy.model_dir
    if not folder:
        raise InvalidInput("the direction policy needs a trained model: --policy-model DIR "
                           "(SIGSTREAM_ENGINE__POLICY__MODEL_DIR), made by `sigstream direction train`")
    from adapters.model.direction import read_meta

    meta = read_meta(Path(folder))  # a bad folder is InvalidInput before the encoder loads
    if meta.get("interval") not in (None, settings.interval.value):
        raise InvalidInput(f"direction model {folder} was trained on {meta['interval']} bars, "
                           f"this engine runs {settings.interval.value}")
    return DirectionPolicy(_predictor(str(Path(folder).resolve())), settings.interval.ms,
                           settings.policy.direction_threshold)


# Importing this module (the CLI does, for every command) makes `direction` buildable from settings.
register_policy("direction", build_direction_policy)
