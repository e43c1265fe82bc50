"""Recording order across market.raw and news.raw, so a Kafka run decides exactly what replay decides.

Market frames (keyed by symbol) and news travel on different topics with the same number of
partitions, and a consumer sees them interleaved in whatever order fetches complete. The engine's
decisions depend on that interleaving: a bar's signal counts the news scored before it, a news signal
carries the features of the bars before it. Replay processes the recording in order.

News reaches every worker: the publisher writes one copy of each news item to every news.raw
partition, and faust assigns news.raw partition p to the worker that owns market.raw partition p
(topics with equal partition counts are co-partitioned). The copy on partition p applies to the
symbols of market partition p only, so each symbol gets each news item exactly once.

The publisher (:mod:`adapters.kafka.source`) stamps each record with where the other topic stood on
the same partition when it was published, as Kafka headers:

* a market record on partition p carries ``sigstream.news`` = the news.raw[p] offset after the last
  news published before it: it is processed only once every news offset below that is handled;
* a news copy on partition p carries ``sigstream.market`` = ``{p: next offset}`` of market.raw[p]:
  its sentiment is applied to p's symbols only once that partition has been processed up to there.

Offsets are absolute, so the rules hold across worker restarts. Records without these headers (live
sources) are processed in arrival order. The publisher ends a replay with a ``Watermark`` record on
every market partition so that the last news signals are released.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from engine.errors import InvalidInput
from engine.events import SentimentScore

log = logging.getLogger(__name__)

NEWS_HEADER = "sigstream.news"
MARKET_HEADER = "sigstream.market"


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for ``key``: publisher and worker agree."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def market_header(offsets: dict[int, int]) -> bytes:
    return orjson.dumps({str(p): o for p, o in sorted(offsets.items())})


def parse_market_header(value: bytes) -> dict[int, int]:
    try:
        data = orjson.loads(value)
        return {int(p): int(o) for p, o in data.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"bad {MARKET_HEADER} header {value!r}: {exc}") from None


def parse_news_header(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"bad {NEWS_HEADER} header {value!r}") from None


@dataclass(order=True)
class _Held:
    news_offset: int
    symbol: str = field(compare=False)
    market_offset: int = field(compare=False)
    score: SentimentScore = field(compare=False)


@dataclass(slots=True)
class OrderingStats:
    held: int = 0
    released: int = 0
    waited: int = 0
    expired: int = 0


class Sequencer:
    """Holds news signals until the bars before them are processed (the processor holds market records).

    ``apply`` is called with a single-symbol score when it may be applied; it is the engine step.
    """

    def __init__(
        self,
        apply: Callable[[SentimentScore], Awaitable[None]],
        *,
        committed_news_offset: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        self._apply = apply
        self._committed_news_offset = committed_news_offset
        self._news_done: dict[int, int] = {}  # partition -> every news.raw offset below has been handled
        self._market_done: dict[int, int] = {}  # partition -> every offset below has been processed
        self._held: dict[int, list[_Held]] = {}
        # Per news copy (partition, offset): how many of its scores are held, and its ack once deferred.
        self._held_count: dict[tuple[int, int], int] = {}
        self._deferred_acks: dict[tuple[int, int], Callable[[], Awaitable[object]]] = {}
        self.stats = OrderingStats()

    # -- news side ---------------------------------------------------------------------------
    async def news_handled(self, partition: int, next_offset: int) -> None:
        """Every news.raw[partition] offset below ``next_offset`` is handled (scored, dead-lettered, dropped)."""
        if next_offset > self._news_done.get(partition, -1):
            self._news_done[partition] = next_offset
        await self._release(partition)

    async def add_score(
        self,
        score: SentimentScore,
        news_offset: int | None,
        market: dict[int, int] | None,
        partition_of: Callable[[str], int],
        news_partition: int = 0,
    ) -> None:
        """A scored news copy: apply it per symbol now, or hold it until its market position is reached.

        A stamped copy (``market`` given) read from news.raw[``news_partition``] is for the symbols of
        that market partition only; the other copies serve the other symbols.
        """
        for symbol in score.symbols:
            single = score if len(score.symbols) == 1 else _for_symbol(score, symbol)
            if news_offset is None or market is None:
                await self._apply(single)
                continue
            partition = partition_of(symbol)
            if partition != news_partition:
                continue
            heapq.heappush(
                self._held.setdefault(partition, []),
                _Held(news_offset, symbol, market.get(partition, 0), single),
            )
            key = (partition, news_offset)
            self._held_count[key] = self._held_count.get(key, 0) + 1
            self.stats.held += 1

    def defer_ack(self, partition: int, news_offset: int, ack: Callable[[], Awaitable[object]]) -> bool:
        """Keep a news record unacked while any of its scores is held; True when deferred.

        Acking it at once would let faust commit past a signal that so far exists only in memory, and a
        hard crash would lose it for good; deferred, the record is delivered again after a crash.
        """
        if not self._held_count.get((partition, news_offset)):
            return False
        self._deferred_acks[(partition, news_offset)] = ack
        return True

    def forget(self, partitions: set[int]) -> None:
        """Drop the positions of revoked partitions (their held scores were applied before the revoke)."""
        for partition in partitions:
            self._news_done.pop(partition, None)
            self._market_done.pop(partition, None)

    # -- market side -------------------------------------------------------------------------
    def news_done(self, partition: int) -> int | None:
        """Every news.raw[partition] offset below this is handled; ``None`` until known."""
        return self._news_done.get(partition)

    async def news_start(self, partition: int) -> int:
        """The news position of a (re)started worker: the group's committed news.raw[partition] offset."""
        if partition not in self._news_done:
            committed = await self._committed_news_offset(partition) if self._committed_news_offset else 0
            self._news_done[partition] = max(committed, self._news_done.get(partition, 0))
        return self._news_done[partition]

    def news_ready(self, news_before: int | None, partition: int) -> bool:
        """May a market record on ``partition`` stamped ``news_before`` be processed now?"""
        done = self._news_done.get(partition)
        return news_before is None or (done is not None and done >= news_before)

    async def before_market(self, partition: int, offset: int) -> None:
        """Apply the news that precedes this record on its partition."""
        self._market_done[partition] = max(self._market_done.get(partition, 0), offset)
        await self._release(partition)

    async def after_market(self, partition: int, offset: int) -> None:
        """The record at ``offset`` is processed; news published right after it may now apply."""
        self._market_done[partition] = max(self._market_done.get(partition, 0), offset + 1)
        await self._release(partition)

    @property
    def pending(self) -> int:
        return sum(len(h) for h in self._held.values())

    async def release_all(self) -> None:
        """Apply everything held, in news order (shutdown: better a slightly early signal than none)."""
        for partition in list(self._held):
            heap = self._held[partition]
            while heap:
                held = heapq.heappop(heap)
                self.stats.released += 1
                await self._apply(held.score)
                await self._applied(partition, held.news_offset)

    async def _release(self, partition: int) -> None:
        heap = self._held.get(partition)
        done_market = self._market_done.get(partition, 0)
        done_news = self._news_done.get(partition, 0)
        while heap and heap[0].market_offset <= done_market and heap[0].news_offset < done_news:
            held = heapq.heappop(heap)
            self.stats.released += 1
            await self._apply(held.score)
            await self._applied(partition, held.news_offset)

    async def _applied(self, partition: int, news_offset: int) -> None:
        key = (partition, news_offset)
        remaining = self._held_count.get(key, 1) - 1
        if remaining > 0:
            self._held_count[key] = remaining
            return
        self._held_count.pop(key, None)
        ack = self._deferred_acks.pop(key, None)
        if ack is not None:
            await ack()


def _for_symbol(score: SentimentScore, symbol: str) -> SentimentScore:
    return SentimentScore(
        score.news_id,
        (symbol,),
        score.bearish,
        score.neutral,
        score.bullish,
        score.label,
        score.confidence,
        score.ts_event,
        score.ts_init,
    )
