"""The chapter's ``MarketDirectionPredictor``: text + numbers -> next-bar Down/Flat/Up.

For each closed bar of a symbol, the news about that symbol published in the bar's window (``[close - interval,
close)``, the same window :class:`engine.policy.DirectionPolicy` reads live) is embedded by the LoRA-adapted
sentiment encoder (the shipped MiniLM + adapter, :mod:`adapters.model.client`), mean-pooled over tokens and then
averaged over the window's items. That vector is concatenated with the ten rolling features (standardised on the
training data), a has-news flag and ``log(1 + items)``, and an MLP predicts the class of the next bar's
close-to-close return ``r``: Down (``r < -flat_threshold``), Flat, or Up (``r > flat_threshold``).

Training is walk-forward by time and never shuffled across time: each fold's model sees only samples whose label
was known (the next bar had closed) at the fold's first decision. Embeddings are cached on disk by text, so a
second run (or the backtest after ``direction train``) does not run the encoder again.

:class:`DirectionPredictor` implements :class:`engine.ports.DirectionModel`; :class:`WalkForwardDirectionModel`
switches between per-fold models by the decision's bar time, for the backtest.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from adapters.model.teacher import cache_root
from engine.errors import InvalidInput
from engine.events import FEATURE_NAMES, Bar, Features, Interval, NewsItem
from engine.features import FeatureCalculator
from engine.symbols import SymbolMapper

if TYPE_CHECKING:
    import torch

    from adapters.model.config import ModelSettings

LABELS: tuple[str, str, str] = ("down", "flat", "up")
MODEL_FILE = "direction.pt"
META_FILE = "direction.json"
METRICS_FILE = "metrics.json"
_NUMERIC = len(FEATURE_NAMES) + 2  # the ten features, has-news, log(1 + items)


class DirectionSettings(BaseModel):
    """How the direction model is labelled and trained."""

    model_config = ConfigDict(frozen=True)

    flat_threshold: float = Field(0.01, ge=0.0, lt=1.0, description="|next-bar return| at or below this is Flat.")
    hidden: int = Field(64, ge=4, le=4096, description="Width of the MLP's hidden layer.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout after the hidden layer.")
    epochs: int = Field(300, ge=1, le=100_000, description="Full-batch Adam steps per fold.")
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="Adam learning rate.")
    weight_decay: float = Field(1e-3, ge=0.0, le=1.0, description="Adam weight decay (L2).")
    seed: int = Field(42, description="Seed of the weights' initialisation and dropout.")
    folds: int = Field(4, ge=1, le=50, description="Walk-forward folds over the period that has news.")


# -- samples ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sample:
    """One bar of one symbol: what was known at its close, and the class of the next bar's return."""

    symbol: str
    ts: int  # the bar's close: the decision time
    features: tuple[float, ...]  # the ten features; NaN where undefined
    texts: tuple[str, ...]
    label: int | None  # index into LABELS; None for the last bar (no next bar yet)
    label_ts: int | None  # when the label became known: the next bar's close


def label_of(ret: float, flat_threshold: float) -> int:
    """0 (down), 1 (flat) or 2 (up) for a next-bar return."""
    if ret > flat_threshold:
        return 2
    if ret < -flat_threshold:
        return 0
    return 1


def feature_vector(features: Features) -> tuple[float, ...]:
    values = features.values()
    return tuple(float(v) if v is not None and math.isfinite(v) else math.nan for v in values.values())


def symbol_samples(
    bars: Sequence[Bar], news: Sequence[tuple[int, str]], interval: Interval, flat_threshold: float
) -> list[Sample]:
    """Samples of one symbol's time-ordered bars; ``news`` is (publish ms, text) about that symbol."""
    if not bars:
        return []
    calculator = FeatureCalculator(bars[0].symbol, interval)
    ordered_news = sorted(news, key=lambda n: n[0])
    times = [ts for ts, _ in ordered_news]
    out: list[Sample] = []
    computed = []
    for bar in bars:
        try:
            computed.append((bar, calculator.update(bar)))
        except InvalidInput:
            continue  # unusable prices: the engine dead-letters the same bar
    for i, (bar, features) in enumerate(computed):
        lo = bisect.bisect_left(times, bar.ts_event - interval.ms)
        hi = bisect.bisect_left(times, bar.ts_event)  # strictly before the close
        texts = tuple(text for _, text in ordered_news[lo:hi])
        label = label_ts = None
        if i + 1 < len(computed):
            nxt = computed[i + 1][0]
            label = label_of(nxt.close / bar.close - 1.0, flat_threshold)
            label_ts = nxt.ts_event
        out.append(Sample(bar.symbol, bar.ts_event, feature_vector(features), texts, label, label_ts))
    return out


def build_samples(
    bars_by_symbol: Mapping[str, Sequence[Bar]],
    news: Iterable[NewsItem],
    interval: Interval,
    mapper: SymbolMapper,
    flat_threshold: float,
) -> list[Sample]:
    """Every symbol's samples, in time order (ties by symbol); news is mapped to symbols as the engine maps it."""
    by_symbol: dict[str, list[tuple[int, str]]] = {s: [] for s in bars_by_symbol}
    for item in news:
        for symbol in mapper.symbols_for(item.text, item.tags + item.symbols):
            if symbol in by_symbol:
                by_symbol[symbol].append((item.ts_event, item.text))
    samples = [
        s
        for symbol, bars in bars_by_symbol.items()
        for s in symbol_samples(bars, by_symbol[symbol], interval, flat_threshold)
    ]
    samples.sort(key=lambda s: (s.ts, s.symbol))
    return samples


# -- text embeddings ----------------------------------------------------------------------------------------
class TextEmbedder(Protocol):
    """Text -> vector. Required: ``dim``, ``embed`` (one row per text, float32), ``save`` (keep what was
    computed, e.g. a disk cache; a no-op for an embedder that keeps nothing)."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self) -> None: ...


def default_cache_dir() -> Path:
    """The model adapter's one cache root (``$SIGSTREAM_CACHE``, else the XDG rule), shared with the teacher."""
    return cache_root()


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class EncoderEmbedder:
    """Mean-pooled last hidden state of the LoRA-adapted sentiment encoder, cached on disk by text.

    The cache file is named for the encoder (base, adapter, max length), so another adapter never reads
    these vectors. fp32 on CPU: a text's vector does not depend on its batch mates up to float rounding.
    """

    def __init__(self, settings: ModelSettings, cache_dir: Path | None = None, batch_size: int = 64) -> None:
        from adapters.model.client import load_classifier

        self.settings = settings.model_copy(update={"dtype": "float32", "quantize": "none"})
        self._loaded = load_classifier(self.settings, quantize_override="none")
        config = getattr(self._loaded.model, "config", None)
        self._dim = int(getattr(config, "hidden_size", 384))
        self.batch_size = batch_size
        ident = f"{self.settings.base}|{self.settings.adapter}|{self.settings.max_length}|mean"
        self.description = f"{self.settings.base} + {self.settings.adapter or 'no adapter'}, mean-pooled"
        self.cache_path = (cache_dir or default_cache_dir()) / f"embeddings-{_text_key(ident)[:12]}.npz"
        self._cache: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.cache_path.is_file():
            with np.load(self.cache_path) as data:
                keys, vectors = data["keys"], data["vectors"]
                self._cache = {str(k): vectors[i] for i, k in enumerate(keys)}

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts, strict=True)}
            for key, vector in zip(missing, self._encode([by_key[k] for k in missing]), strict=True):
                self._cache[key] = vector
            self._dirty = True
        if not keys:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        tok = self._loaded.tokenizer
        model = self._loaded.model
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray | None] = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                chunk = order[s : s + self.batch_size]
                batch = tok([texts[i] for i in chunk], truncation=True, max_length=self.settings.max_length,
                            padding=True, return_tensors="pt")
                hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                for i, row in zip(chunk, pooled.cpu().numpy(), strict=True):
                    out[i] = row.astype(np.float32)
        return [v for v in out if v is not None]

    def save(self) -> None:
        """Write new vectors to the cache file (atomically: a crash leaves the old file)."""
        if not self._dirty:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._cache), dtype="<U40")
        vectors = np.stack(list(self._cache.values())).astype(np.float32)
        tmp = self.cache_path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(self.cache_path)
        self._dirty = False


# -- the model ----------------------------------------------------------------------------------------------
def _net(inputs: int, settings: DirectionSettings) -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(inputs, settings.hidden), nn.ReLU(), nn.Dropout(settings.dropout), nn.Linear(settings.hidden, 3)
    )


def _pooled(embedder: TextEmbedder, texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros(embedder.dim, dtype=np.float32)
    return np.asarray(embedder.embed(texts), dtype=np.float32).mean(axis=0)


@dataclass(slots=True)
class TrainedDirection:
    """An MLP and the feature standardisation it was trained with."""

    net: Any
    mean: np.ndarray
    std: np.ndarray
    dim: int
    settings: DirectionSettings
    trained_until: int | None = None
    train_samples: int = 0
    train_labels: dict[str, int] = field(default_factory=dict)

    def inputs(self, embeddings: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """Rows of [pooled embedding, standardised features (0 where undefined), has-news, log(1 + items)]."""
        feats = (numeric[:, : len(FEATURE_NAMES)] - self.mean) / self.std
        feats = np.clip(np.nan_to_num(feats, nan=0.0), -5.0, 5.0)
        return np.concatenate([embeddings, feats, numeric[:, len(FEATURE_NAMES) :]], axis=1).astype(np.float32)

    def probs(self, embeddings: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(self.inputs(embeddings, numeric)))
            return torch.softmax(logits, dim=-1).numpy()


def sample_arrays(samples: Sequence[Sample], embedder: TextEmbedder) -> tuple[np.ndarray, np.ndarray]:
    """(pooled embeddings, raw numeric columns) for ``samples``."""
    embeddings = np.stack([_pooled(embedder, s.texts) for s in samples]) if samples else np.zeros((0, embedder.dim))
    numeric = np.array(
        [[*s.features, 1.0 if s.texts else 0.0, math.log1p(len(s.texts))] for s in samples], dtype=np.float64
    ).reshape(len(samples), _NUMERIC)
    return embeddings.astype(np.float32), numeric


def fit(samples: Sequence[Sample], embedder: TextEmbedder, settings: DirectionSettings) -> TrainedDirection:
    """Train on ``samples`` (labelled ones only), full batch, in time order; class-weighted cross-entropy."""
    import torch

    labelled = [s for s in samples if s.label is not None]
    if len(labelled) < 10:
        raise InvalidInput(f"the direction model needs at least 10 labelled bars to train on, got {len(labelled)}")
    embeddings, numeric = sample_arrays(labelled, embedder)
    feats = numeric[:, : len(FEATURE_NAMES)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature undefined on every training bar: mean 0, std 1
        mean = np.nan_to_num(np.nanmean(feats, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(feats, axis=0), nan=1.0)
    std = np.where(std > 1e-12, std, 1.0)
    torch.manual_seed(settings.seed)
    model = TrainedDirection(_net(embedder.dim + _NUMERIC, settings), mean, std, embedder.dim, settings)
    x = torch.from_numpy(model.inputs(embeddings, numeric))
    y = torch.tensor([s.label for s in labelled], dtype=torch.long)
    counts = torch.bincount(y, minlength=3).float()
    weights = counts.sum() / (3 * counts.clamp(min=1.0))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    model.net.train()
    for _ in range(settings.epochs):
        optimizer.zero_grad()
        loss = loss_fn(model.net(x), y)
        loss.backward()
        optimizer.step()
    model.net.eval()
    model.trained_until = max(s.label_ts or s.ts for s in labelled)
    model.train_samples = len(labelled)
    model.train_labels = {LABELS[i]: int(c) for i, c in enumerate(counts.tolist())}
    return model


def classification_metrics(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes that occur in either list) and the confusion matrix
    (rows: true down/flat/up, columns: predicted)."""
    confusion = [[0, 0, 0] for _ in range(3)]
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p] += 1
    n = len(truth)
    f1s = []
    for k in range(3):
        tp = confusion[k][k]
        fp = sum(confusion[r][k] for r in range(3)) - tp
        fn = sum(confusion[k]) - tp
        if tp + fp + fn == 0:
            continue  # the class is absent from both: it has no F1
        f1s.append(2 * tp / (2 * tp + fp + fn))
    majority = max(range(3), key=lambda k: sum(confusion[k])) if n else 1
    return {
        "samples": n,
        "accuracy": sum(confusion[k][k] for k in range(3)) / n if n else None,
        "macro_f1": sum(f1s) / len(f1s) if f1s else None,
        "majority_class_accuracy": sum(confusion[majority]) / n if n else None,
        "confusion": confusion,
        "labels": list(LABELS),
    }


def evaluate(model: TrainedDirection, samples: Sequence[Sample], embedder: TextEmbedder) -> dict[str, Any]:
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        return classification_metrics([], [])
    embeddings, numeric = sample_arrays(labelled, embedder)
    predicted = model.probs(embeddings, numeric).argmax(axis=1).tolist()
    metrics = classification_metrics([s.label for s in labelled if s.label is not None], predicted)
    metrics["with_news"] = sum(bool(s.texts) for s in labelled)
    return metrics


# -- walk-forward -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FoldSpan:
    """Decisions at bar closes in ``[start_ms, end_ms)`` (the last fold also includes ``end_ms``)."""

    index: int
    start_ms: int
    end_ms: int


def news_folds(samples: Sequence[Sample], folds: int) -> list[FoldSpan]:
    """``folds`` equal-count time folds over the bars that have news (the period the text can inform)."""
    times = sorted({s.ts for s in samples if s.texts})
    if len(times) < 2 * folds:
        raise InvalidInput(f"{len(times)} bar time(s) with news are too few for {folds} fold(s)")
    cuts = [times[len(times) * k // folds] for k in range(folds)] + [times[-1]]
    return [FoldSpan(k, cuts[k], cuts[k + 1]) for k in range(folds)]


def in_fold(sample: Sample, fold: FoldSpan, last: bool) -> bool:
    return fold.start_ms <= sample.ts < fold.end_ms or (last and sample.ts == fold.end_ms)


def train_before(samples: Sequence[Sample], start_ms: int) -> list[Sample]:
    """The samples whose label was known at ``start_ms``: the training set of a fold starting there."""
    return [s for s in samples if s.label_ts is not None and s.label_ts <= start_ms]


def walk_forward(
    samples: Sequence[Sample], embedder: TextEmbedder, settings: DirectionSettings, folds: Sequence[FoldSpan]
) -> list[tuple[FoldSpan, TrainedDirection, dict[str, Any]]]:
    """Per fold: a model trained only on what was known at its start, and its metrics on the fold."""
    out = []
    for fold in folds:
        model = fit(train_before(samples, fold.start_ms), embedder, settings)
        test = [s for s in samples if in_fold(s, fold, fold.index == len(folds) - 1)]
        metrics = evaluate(model, test, embedder)
        metrics.update({"fold": fold.index, "start_ts": fold.start_ms, "end_ts": fold.end_ms,
                        "train_samples": model.train_samples, "train_labels": model.train_labels,
                        "trained_until_ts": model.trained_until})
        out.append((fold, model, metrics))
    return out


# -- the engine's DirectionModel port -----------------------------------------------------------------------
class DirectionPredictor:
    """A trained model behind :class:`engine.ports.DirectionModel`."""

    def __init__(self, model: TrainedDirection, embedder: TextEmbedder) -> None:
        self.model = model
        self.embedder = embedder

    def predict_proba(self, texts: Sequence[str], features: Features) -> tuple[float, float, float]:
        numeric = np.array([[*feature_vector(features), 1.0 if texts else 0.0, math.log1p(len(texts))]])
        row = self.model.probs(_pooled(self.embedder, texts)[None, :], numeric)[0]
        return float(row[0]), float(row[1]), float(row[2])


class WalkForwardDirectionModel:
    """Per-fold models, each used for decisions at bars closing inside its fold (chosen by the features' bar
    close time). Before the first fold there is no model trained without the future: it says Flat."""

    def __init__(self, models: Sequence[tuple[int, DirectionPredictor]]) -> None:
        self.models = sorted(models, key=lambda m: m[0])

    def predict_proba(self, texts: Sequence[str], features: Features) -> tuple[float, float, float]:
        chosen = None
        for start, model in self.models:
            if start <= features.ts_event:
                chosen = model
        if chosen is None:
            return (0.0, 1.0, 0.0)
        return chosen.predict_proba(texts, features)


# -- files --------------------------------------------------------------------------------------------------
def save_model(model: TrainedDirection, folder: Path, meta: dict[str, Any]) -> None:
    """``direction.pt`` (the MLP's weights) and ``direction.json`` (settings, standardisation, provenance)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), folder / MODEL_FILE)
    record = {
        **meta,
        "settings": model.settings.model_dump(),
        "dim": model.dim,
        "feature_mean": model.mean.tolist(),
        "feature_std": model.std.tolist(),
        "features": list(FEATURE_NAMES),
        "labels": list(LABELS),
        "trained_until_ts": model.trained_until,
        "train_samples": model.train_samples,
        "train_labels": model.train_labels,
    }
    (folder / META_FILE).write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file() or not (folder / MODEL_FILE).is_file():
        raise InvalidInput(f"{folder} is not a direction model folder (needs {META_FILE} and {MODEL_FILE}; "
                           "make one with `sigstream direction train`)")
    meta = orjson.loads(path.read_bytes())
    if not isinstance(meta, dict):
        raise InvalidInput(f"{path} is not a direction model description")
    return meta


def load_model(folder: Path) -> TrainedDirection:
    """The MLP saved by :func:`save_model`."""
    import torch

    meta = read_meta(folder)
    settings = DirectionSettings(**meta["settings"])
    dim = int(meta["dim"])
    net = _net(dim + _NUMERIC, settings)
    net.load_state_dict(torch.load(folder / MODEL_FILE, weights_only=True))
    net.eval()
    return TrainedDirection(net, np.array(meta["feature_mean"]), np.array(meta["feature_std"]), dim, settings,
                            meta.get("trained_until_ts"), int(meta.get("train_samples", 0)),
                            dict(meta.get("train_labels", {})))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
