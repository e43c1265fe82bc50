"""The engine's SentimentModel port, implemented with transformers (+ peft adapters).

Two serving paths over the same weights:

* :meth:`TransformersSentimentModel.optimized`: length-sorted batches, and on CPU INT8 dynamic
  quantization of the Linear layers (bf16 or a 4-bit base on CUDA).
* :meth:`TransformersSentimentModel.baseline` (also :class:`BaselineSentimentModel`): the chapter's
  loop, one text per forward pass in fp32, kept so that speed-ups can be measured against it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adapters.model.client import LoadedClassifier, load_classifier
from adapters.model.config import ModelSettings

if TYPE_CHECKING:
    import torch

Probs = tuple[float, float, float]


class TransformersSentimentModel:
    """(bearish, neutral, bullish) probabilities from a sequence-classification model.

    Thread-safe: calls are serialised by a lock, because a fast tokenizer is not safe to share across
    threads and concurrent forward passes would only fight over the same cores.
    """

    def __init__(
        self,
        loaded: LoadedClassifier,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        sort_by_length: bool = True,
    ) -> None:
        self._loaded = loaded
        self.batch_size = batch_size
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return self._loaded.description

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded.model

    @classmethod
    def optimized(cls, settings: ModelSettings | None = None) -> TransformersSentimentModel:
        """The engine's serving path: batched, length-sorted, INT8 on CPU (``quantize=auto``)."""
        settings = settings or ModelSettings()
        _apply_threads(settings)
        return cls(
            load_classifier(settings),
            batch_size=settings.batch_size,
            max_length=settings.max_length,
            sort_by_length=settings.sort_by_length,
        )

    @classmethod
    def baseline(cls, settings: ModelSettings | None = None) -> TransformersSentimentModel:
        """The chapter's baseline: one text per forward pass, fp32, no quantization, no sorting."""
        settings = (settings or ModelSettings()).model_copy(update={"dtype": "float32"})
        _apply_threads(settings)
        return cls(
            load_classifier(settings, quantize_override="none"),
            batch_size=1,
            max_length=settings.max_length,
            sort_by_length=False,
        )

    def predict_proba(self, texts: Sequence[str]) -> list[Probs]:
        """Probabilities of (bearish, neutral, bullish) for each text, in input order."""
        if not texts:
            return []
        with self._lock:
            return self._predict(list(texts))

    def _predict(self, texts: list[str]) -> list[Probs]:
        import torch

        tok = self._loaded.tokenizer
        encoded = tok(texts, truncation=True, max_length=self.max_length)
        ids: list[list[int]] = encoded["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i])) if self.sort_by_length else range(len(texts))
        order = list(order)
        out: list[Probs | None] = [None] * len(texts)
        cols = list(self._loaded.label_index)
        device = self._loaded.device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                features: dict[str, Any] = {k: [encoded[k][i] for i in chunk] for k in encoded.keys()}
                padded = tok.pad(features, return_tensors="pt")
                batch = {k: v.to(device) for k, v in padded.items()}
                logits = self._loaded.model(**batch).logits
                probs = torch.softmax(logits.float(), dim=-1)[:, cols].cpu().tolist()
                for i, p in zip(chunk, probs, strict=True):
                    out[i] = (p[0], p[1], p[2])
        missing = [i for i, p in enumerate(out) if p is None]
        assert not missing, f"texts {missing[:5]} got no prediction"
        return out  # type: ignore[return-value]  # every slot is filled, checked just above


class BaselineSentimentModel(TransformersSentimentModel):
    """The chapter's ``batch_signals`` loop: one text per forward pass in fp32."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        built = TransformersSentimentModel.baseline(settings)
        super().__init__(built._loaded, batch_size=1, max_length=built.max_length, sort_by_length=False)


def _apply_threads(settings: ModelSettings) -> None:
    if settings.num_threads is not None:
        import torch

        torch.set_num_threads(settings.num_threads)


def load_sentiment_model(
    settings: ModelSettings | None = None, *, baseline: bool = False
) -> TransformersSentimentModel:
    """The factory the engine's wiring calls: the optimized path unless ``baseline`` is asked for."""
    return TransformersSentimentModel.baseline(settings) if baseline else TransformersSentimentModel.optimized(settings)
