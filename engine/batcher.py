"""Sentiment micro-batching against the :class:`engine.ports.SentimentModel` port.

Texts are collected until ``max_batch`` are pending or ``max_wait_ms`` has passed, de-duplicated,
scored off the event loop, and handed back in the order they were given. A failed model call
fails every waiting caller with the error; no text is ever dropped without its caller knowing.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from engine.config import BatcherSettings
from engine.errors import FatalError, InvalidInput
from engine.ports import SentimentModel

Probs = tuple[float, float, float]
T = TypeVar("T")
RunBlocking = Callable[[Callable[[Sequence[str]], list[Probs]], Sequence[str]], Awaitable[list[Probs]]]


async def _to_thread(fn: Callable[[Sequence[str]], list[Probs]], texts: Sequence[str]) -> list[Probs]:
    return await asyncio.to_thread(fn, texts)


@dataclass(slots=True)
class BatcherStats:
    """Counters for metrics and the end-of-run report."""

    texts: int = 0
    cache_hits: int = 0
    duplicates: int = 0
    model_calls: int = 0
    model_texts: int = 0


class MicroBatcher:
    """Batches texts for a sentiment model; see the module docstring for the guarantees."""

    def __init__(
        self,
        model: SentimentModel,
        settings: BatcherSettings | None = None,
        *,
        run_blocking: RunBlocking = _to_thread,
    ) -> None:
        self._model = model
        self.settings = settings or BatcherSettings()
        self._run_blocking = run_blocking
        self._cache: OrderedDict[str, Probs] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Probs]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.stats = BatcherStats()

    def validate(self, text: str) -> str:
        """Raise :class:`InvalidInput` for text the model must not see."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("empty text cannot be scored")
        if len(text) > self.settings.max_text_chars:
            raise InvalidInput(f"text of {len(text)} chars exceeds max_text_chars={self.settings.max_text_chars}")
        return text

    async def score(self, texts: Sequence[str]) -> list[Probs]:
        """Score a known list now, in ``max_batch`` chunks; results line up with ``texts``.

        Replay, backtest and the faust agent (which already took a batch from its stream) use this.
        """
        if not texts:
            raise InvalidInput("empty batch: nothing to score")
        for text in texts:
            self.validate(text)
        self.stats.texts += len(texts)
        results: dict[str, Probs] = {}
        to_score: list[str] = []
        for text in dict.fromkeys(texts):
            cached = self._cache.get(text)
            if cached is not None:
                self.stats.cache_hits += 1
                results[text] = cached
            else:
                to_score.append(text)
        self.stats.duplicates += len(texts) - len(results) - len(to_score)
        # Length bucketing across chunks: similar lengths share a batch, so little compute goes on padding.
        to_score.sort(key=len)
        size = self.settings.max_batch
        for offset in range(0, len(to_score), size):
            chunk = to_score[offset : offset + size]
            for text, probs in zip(chunk, await self._predict(chunk), strict=True):
                results[text] = probs
        return [results[text] for text in texts]

    async def submit(self, text: str) -> Probs:
        """Streaming entry: wait for a full batch or ``max_wait_ms``, then return this text's scores."""
        self.validate(text)
        self.stats.texts += 1
        cached = self._cache.get(text)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        future = self._pending.get(text)
        if future is not None:
            self.stats.duplicates += 1
            return await asyncio.shield(future)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[text] = future
        if len(self._pending) >= self.settings.max_batch:
            self._dispatch()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.max_wait_ms / 1000.0, self._dispatch)
        return await asyncio.shield(future)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Score whatever is pending now and wait for every batch in flight (shutdown, SIGTERM)."""
        self._dispatch()
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _run_batch(self, batch: dict[str, asyncio.Future[Probs]]) -> None:
        texts = list(batch)
        try:
            probs = await self._predict(texts)
        except Exception as exc:  # every waiting caller gets the error; none is left hanging
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for text, value in zip(texts, probs, strict=True):
            future = batch[text]
            if not future.done():
                future.set_result(value)

    async def _predict(self, texts: list[str]) -> list[Probs]:
        probs = await self._run_blocking(self._model.predict_proba, texts)
        self.stats.model_calls += 1
        self.stats.model_texts += len(texts)
        if len(probs) != len(texts):
            raise FatalError(f"sentiment model returned {len(probs)} results for {len(texts)} texts")
        checked = [_checked(p) for p in probs]
        if self.settings.cache_size:
            for text, value in zip(texts, checked, strict=True):
                self._cache[text] = value
                self._cache.move_to_end(text)
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return checked


def _checked(probs: Sequence[float]) -> Probs:
    # All zeros is no distribution: it would become a "bearish, confidence 0" vote that still counts as a source.
    if len(probs) != 3 or not all(math.isfinite(p) and p >= 0.0 for p in probs) or sum(probs) <= 0.0:
        raise FatalError(f"sentiment model returned invalid probabilities {probs!r}")
    return (float(probs[0]), float(probs[1]), float(probs[2]))
