"""Micro-batcher: batching, de-duplication, order, errors, nothing lost."""

from __future__ import annotations

import asyncio
import math

import pytest

from engine.batcher import MicroBatcher
from engine.config import BatcherSettings
from engine.errors import FatalError, InvalidInput
from tests.support.lexicon_model import LexiconSentimentModel


async def test_score_preserves_order_and_deduplicates_identical_texts() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model, BatcherSettings(max_batch=2))
    texts = ["btc surges", "eth crash", "btc surges", "calm day", "eth crash"]
    out = await batcher.score(texts)
    assert out == model.predict_proba(texts)
    # three unique texts in batches of at most two -> two model calls, before the reference call above
    assert [len(c) for c in model.calls[:2]] == [2, 1]
    assert batcher.stats.duplicates == 2


async def test_submit_fills_a_batch_at_max_batch_without_waiting() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model, BatcherSettings(max_batch=3, max_wait_ms=60_000))
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(f"text {i} up") for i in range(3))), 5)
    assert len(results) == 3
    assert model.calls == [["text 0 up", "text 1 up", "text 2 up"]]


async def test_submit_flushes_a_partial_batch_after_max_wait() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model, BatcherSettings(max_batch=100, max_wait_ms=20))
    result = await asyncio.wait_for(batcher.submit("lonely text"), 5)
    assert result == model.predict_proba(["lonely text"])[0]
    assert model.calls[0] == ["lonely text"]


async def test_concurrent_duplicate_submissions_share_one_model_slot() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model, BatcherSettings(max_batch=10, max_wait_ms=10))
    a, b = await asyncio.gather(batcher.submit("same"), batcher.submit("same"))
    assert a == b
    assert model.calls == [["same"]]


async def test_flush_scores_pending_texts_immediately() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model, BatcherSettings(max_batch=100, max_wait_ms=60_000))
    task = asyncio.ensure_future(batcher.submit("pending at shutdown"))
    await asyncio.sleep(0)
    assert batcher.pending == 1
    await batcher.flush()
    assert task.done() and task.result()[1] > 0


@pytest.mark.parametrize("text", ["", "   "])
async def test_empty_text_is_rejected_with_a_clear_error(text: str) -> None:
    batcher = MicroBatcher(LexiconSentimentModel())
    with pytest.raises(InvalidInput, match="empty text"):
        await batcher.submit(text)


async def test_oversized_text_and_empty_batch_are_rejected() -> None:
    batcher = MicroBatcher(LexiconSentimentModel(), BatcherSettings(max_text_chars=10))
    with pytest.raises(InvalidInput, match="exceeds max_text_chars"):
        await batcher.score(["x" * 11])
    with pytest.raises(InvalidInput, match="empty batch"):
        await batcher.score([])


class _BrokenModel:
    def predict_proba(self, texts):
        raise RuntimeError("CUDA out of memory")


class _ShortModel:
    def predict_proba(self, texts):
        return [(0.2, 0.6, 0.2)]


async def test_model_failure_reaches_every_waiting_caller() -> None:
    batcher = MicroBatcher(_BrokenModel(), BatcherSettings(max_batch=2, max_wait_ms=5))
    results = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_model_returning_too_few_results_is_fatal_not_silent() -> None:
    batcher = MicroBatcher(_ShortModel())
    with pytest.raises(FatalError, match="returned 1 results for 2 texts"):
        await batcher.score(["a", "b"])


class _FixedModel:
    def __init__(self, probs):
        self.probs = probs

    def predict_proba(self, texts):
        return [self.probs for _ in texts]


@pytest.mark.parametrize("probs", [(0.0, 0.0, 0.0), (0.5, math.nan, 0.5), (-0.1, 0.6, 0.5), (0.5, 0.5)])
async def test_probabilities_that_are_no_distribution_are_fatal(probs) -> None:
    with pytest.raises(FatalError, match="invalid probabilities"):
        await MicroBatcher(_FixedModel(probs)).score(["a"])


async def test_cache_skips_the_model_for_recently_scored_text() -> None:
    model = LexiconSentimentModel()
    batcher = MicroBatcher(model)
    await batcher.score(["repeat me"])
    await batcher.score(["repeat me"])
    assert len(model.calls) == 1 and batcher.stats.cache_hits == 1
