"""Recording order across market.raw and news.raw, so a Kafka run decides exactly what replay decides.

Market frames (keyed by symbol) and news travel on different topics with the same number of
partitions, and a consumer sees them interleaved in whatever order fetches complete. The engine's
decisions depend on that interleaving: a bar's signal counts the news scored before it, a news signal
carries the features of the bars before it. Replay processes the recording in order.

News reaches every worker: the publisher writes one copy of each news item to every news.raw
partition, and faust assigns news.raw partition p to the worker that owns market.raw partition p
(topics with equal partition counts are co-partitioned). The copy on partition p applies to the
symbols of market partition p only, so each symbol gets each news item exactly once.

The publisher (:mod:`adapters.kafka.publisher`) stamps each record with where the other topic stood on
the same partition when it was published, as Kafka headers:

* a market record on partition p carries ``sigstream.news`` = the news.raw[p] offset after the last
  news published before it: it is fed only once every news offset below that has been fed;
* a news copy on partition p carries ``sigstream.market`` = ``{p: next offset}`` of market.raw[p]:
  it is fed (for p's symbols only) once every market offset below that has been fed.

Together the two stamps give the publish order of each partition's records, which the worker
(:mod:`adapters.kafka.app`) restores before feeding its runtime. Offsets are absolute, so the rules
hold across worker restarts. Records without these headers (not from sigstream's publisher) are
processed in arrival order. The publisher ends a replay with a ``Watermark`` record on every market
partition, which moves the market position past the last news.
"""

from __future__ import annotations

import orjson

from engine.errors import InvalidInput

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
