"""``KafkaStateStore``: the worker's per-partition snapshots on a compacted topic.

Snapshot ``p`` goes to partition ``p`` of the state topic, keyed ``p``, with the two offsets it covers as
headers. Compaction keeps the last one per key, and a restarted worker reads just the last record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.kafka.app import Snapshot
from adapters.kafka.client import AIOKafkaProducer, explain, make_admin, make_consumer, make_producer
from adapters.kafka.config import KafkaSettings
from engine.errors import TransientError
from engine.retry import Backoff, retry_transient

log = logging.getLogger(__name__)

MARKET_NEXT_HEADER = "sigstream.market_next"
NEWS_NEXT_HEADER = "sigstream.news_next"
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024  # also the state topic's max.message.bytes (adapters/kafka/client.py)


async def ensure_state_topic(settings: KafkaSettings, partitions: int) -> None:
    """Create the compacted state topic with ``partitions`` partitions (market.raw's count) if it is missing;
    an existing one with fewer partitions cannot hold every partition's snapshot."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

    from engine.errors import FatalError

    topic = settings.state_topic()
    admin = make_admin(settings)
    try:
        await admin.start()
        if topic not in set(await admin.list_topics()):
            config = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_SNAPSHOT_BYTES)}
            try:
                await admin.create_topics([NewTopic(topic, partitions, settings.replication_factor,
                                                    topic_configs=config)])
            except TopicAlreadyExistsError:
                log.debug("state topic %s created concurrently", topic)
        described = await admin.describe_topics([topic])
        for _ in range(100):  # a topic just created has no partitions in its description for a moment
            if described and len(described[0].get("partitions") or []) >= partitions:
                break
            await asyncio.sleep(0.1)
            described = await admin.describe_topics([topic])
    except KafkaConnectionError as exc:
        problem = await explain(exc, settings, f"kafka admin at {settings.bootstrap}")
        if not isinstance(problem, TransientError):  # a TLS misconfiguration, not an unreachable broker
            raise problem from exc
        raise TransientError(f"kafka admin could not reach {settings.bootstrap}: {exc}") from exc
    except KafkaError as exc:
        raise await explain(exc, settings, f"kafka admin at {settings.bootstrap}") from exc
    finally:
        await admin.close()
    have = len(described[0].get("partitions") or []) if described else 0
    if have < partitions:
        raise FatalError(f"state topic {topic} has {have} partition(s) but {settings.topics.market_raw} has "
                         f"{partitions}: add partitions (kafka-topics.sh --alter --partitions {partitions})")


class KafkaStateStore:
    """Implements the worker's ``StateStore`` over ``settings.state_topic()``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._topic = settings.state_topic()
        self._producer: AIOKafkaProducer | None = None

    async def load(self, partition: int) -> Snapshot | None:
        """The last snapshot of ``partition``, or None when it never had one; retried through broker hiccups,
        since a partition must not start without the state it had."""

        def retrying(attempt: int, exc: TransientError, delay: float) -> None:
            log.warning("loading the snapshot of partition %d failed (%s); retrying in %.1f s", partition, exc, delay)

        return await retry_transient(lambda: self._load(partition), attempts=None,
                                     backoff=Backoff(initial_s=0.5, maximum_s=10.0), on_retry=retrying)

    async def _load(self, partition: int) -> Snapshot | None:
        from aiokafka.errors import KafkaError
        from aiokafka.structs import TopicPartition

        try:
            return await self._read_last(TopicPartition(self._topic, partition), partition)
        except KafkaError as exc:
            raise TransientError(f"kafka at {self._settings.bootstrap}: {exc}") from exc

    async def _read_last(self, tp: Any, partition: int) -> Snapshot | None:
        consumer = make_consumer(self._settings, enable_auto_commit=False, auto_offset_reset="latest",
                                 max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES)
        await consumer.start()
        try:
            consumer.assign([tp])
            first, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
            if end <= first:
                return None
            # The last few records: compaction or transaction markers may leave the very last offset empty.
            consumer.seek(tp, max(first, end - 16))
            last = None
            while True:
                batch = await consumer.getmany(tp, timeout_ms=2_000)
                records = batch.get(tp, [])
                if not records:
                    break
                last = records[-1]
                if records[-1].offset >= end - 1:
                    break
        finally:
            await consumer.stop()
        if last is None or last.value is None:
            return None
        headers = dict(last.headers or ())
        try:
            market_next = int(headers[MARKET_NEXT_HEADER])
            news_next = int(headers[NEWS_NEXT_HEADER])
        except (KeyError, ValueError):
            log.warning("%s[%d]@%d is not a sigstream snapshot (headers %s); starting without state",
                        self._topic, partition, last.offset, sorted(headers))
            return None
        return Snapshot(partition, market_next, news_next, last.value)

    async def save(self, snapshot: Snapshot) -> None:
        """Write and wait for the broker's acknowledgement (acks=all)."""
        if self._producer is None:
            self._producer = make_producer(self._settings, max_request_size=MAX_SNAPSHOT_BYTES, linger_ms=0)
            await self._producer.start()
        headers = [(MARKET_NEXT_HEADER, str(snapshot.market_next).encode()),
                   (NEWS_NEXT_HEADER, str(snapshot.news_next).encode())]
        try:
            await self._producer.send_and_wait(self._topic, snapshot.engine, key=str(snapshot.partition).encode(),
                                               partition=snapshot.partition, headers=headers)
        except Exception as exc:  # aiokafka raises many KafkaError kinds; all mean "not durable yet"
            raise TransientError(f"snapshot of partition {snapshot.partition} to {self._topic} failed: {exc}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
