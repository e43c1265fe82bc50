"""Raw Kafka protocol helpers over aiokafka: topic admin, producers, consumers, and error translation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from adapters.kafka.config import KafkaSettings
from engine.errors import FatalError, MissingDependency, SigstreamError, TransientError

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import (
        BrokerNotAvailableError,
        KafkaError,
        KafkaTimeoutError,
        KafkaUnavailableError,
        OutOfOrderSequenceNumber,
        ProducerClosed,
        ReplicaNotAvailableError,
        TopicAlreadyExistsError,
        UnknownProducerId,
    )
    from aiokafka.structs import TopicPartition
except ModuleNotFoundError as exc:  # pragma: no cover - aiokafka is a declared dependency
    raise MissingDependency("aiokafka", "the Kafka transport") from exc

log = logging.getLogger(__name__)

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "ConsumerRecord",
    "KafkaError",
    "TopicPartition",
    "abandon_producer",
    "consume",
    "create_topics",
    "ensure_topics",
    "is_transient",
    "make_consumer",
    "make_producer",
    "start_producer",
    "translate",
]


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication_factor: int = 1) -> None:
    """Create topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
                )
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by someone else: %s", missing)
            await _wait_for_leaders(admin, missing)
    except KafkaError as exc:
        raise translate(exc, f"kafka admin at {bootstrap}") from exc
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int | None]:
    """How many partitions each topic has on the broker (None: it does not exist), in one admin session."""
    names = list(dict.fromkeys(topics))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics(names)
    except KafkaError as exc:
        raise translate(exc, f"kafka admin at {bootstrap}") from exc
    finally:
        await admin.close()
    counts: dict[str, int | None] = dict.fromkeys(names)
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def partition_count(bootstrap: str, topic: str) -> int | None:
    """How many partitions ``topic`` has on the broker; None when it does not exist."""
    return (await partition_counts(bootstrap, [topic]))[topic]


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    # A created topic is usable once every partition has a leader; producing earlier fails.
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            t.get("error_code", 0) == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TransientError(f"topics {names} have no leaders after {timeout_s}s")
        await asyncio.sleep(0.1)


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create every sigstream topic with ``partitions`` partitions.

    news.raw has as many partitions as market.raw: faust then gives each worker the news partition of
    each market partition it owns, and the publisher writes every news item to every partition.
    """
    await create_topics(settings.bootstrap, settings.topics.all(), settings.partitions, settings.replication_factor)


def make_producer(settings: KafkaSettings, **overrides: object) -> AIOKafkaProducer:
    """An idempotent (when configured) producer: acks=all, so a broker restart loses nothing acknowledged."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap,
        "acks": "all",
        "enable_idempotence": settings.idempotent_producer,
        "linger_ms": settings.linger_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None = None, **overrides: object
) -> AIOKafkaConsumer:
    """A consumer reading from the earliest offset; committed offsets are used when ``group_id`` is set."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap,
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": group_id is not None,
        "isolation_level": "read_committed",
        "request_timeout_ms": settings.request_timeout_ms,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def consume(
    consumer: AIOKafkaConsumer, *, count: int | None = None, idle_s: float = 2.0, timeout_s: float = 60.0
) -> list[ConsumerRecord]:
    """Read until ``count`` records arrived, or nothing new came for ``idle_s``, or ``timeout_s`` passed."""
    records: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = loop.time()
    while loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
        got = [r for rs in batch.values() for r in rs]
        if got:
            records.extend(got)
            last = loop.time()
            if count is not None and len(records) >= count:
                break
        elif count is None and loop.time() - last > idle_s:
            break
    return records


# Errors that say "not now" rather than "never": the broker is down, restarting, electing a leader, or slow.
# aiokafka marks most of them ``retriable``; these few it does not, yet they pass once the broker is back.
_TRANSIENT_TOO = (
    KafkaTimeoutError,  # a request, a metadata wait or a full send buffer timed out
    KafkaUnavailableError,
    BrokerNotAvailableError,
    ReplicaNotAvailableError,
    ProducerClosed,  # the producer was abandoned by the retry path itself; a new one is made
    # The broker no longer accepts this producer's sequence numbers: a batch expired during an outage
    # (aiokafka fails it even with idempotence when the partition had no leader for request_timeout_ms)
    # and left a gap. The producer is useless, but a new producer that re-sends from the last record the
    # broker holds succeeds: that is what adapters.kafka.publisher does.
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a Kafka client error may pass when retried (after a broker restart, a leader move, ...)."""
    return isinstance(exc, KafkaError) and (bool(getattr(exc, "retriable", False)) or isinstance(exc, _TRANSIENT_TOO))


def translate(exc: KafkaError, context: str = "kafka") -> SigstreamError:
    """A Kafka client error as sigstream's error: :class:`TransientError` (retry) or :class:`FatalError` (stop).

    Transient: connection lost, no leader, not the leader, timeouts, node not ready, not enough replicas...
    (aiokafka's ``retriable`` errors, plus timeouts and producer-sequence errors, see ``_TRANSIENT_TOO``).
    Fatal: everything else (record too large, authorization, invalid topic or configuration).
    """
    text = str(exc)
    name = type(exc).__name__
    reason = " ".join((f"{context}: {text}" if name in text else f"{context}: {name}: {text}").split())  # one line
    return TransientError(reason) if is_transient(exc) else FatalError(reason)


async def start_producer(settings: KafkaSettings, timeout_s: float, **overrides: object) -> AIOKafkaProducer:
    """A started :func:`make_producer`; TransientError when the broker does not answer within ``timeout_s``.

    The bound matters for the idempotent producer: its start waits for a producer id, and aiokafka retries
    that forever while the broker is away.
    """
    producer = make_producer(settings, **overrides)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
    except (TimeoutError, KafkaError) as exc:
        await abandon_producer(producer, timeout_s)
        if isinstance(exc, KafkaError):
            raise translate(exc, f"kafka producer at {settings.bootstrap}") from exc
        raise TransientError(f"kafka producer at {settings.bootstrap}: no answer in {timeout_s:.0f} s") from exc
    return producer


async def abandon_producer(producer: AIOKafkaProducer, timeout_s: float = 10.0) -> None:
    """Stop ``producer`` now: what it has not delivered yet is never sent, now or later.

    ``producer.stop()`` alone waits for every record to be delivered, and the idempotent producer retries a
    batch forever while the broker is away: stop() would not return or, cancelled, would leave the sender
    task retrying in the background, and a batch landing after the caller has read the broker's end offsets
    and re-sent it would be a duplicate. So the sender task is stopped first (it waits for the requests
    already in flight, which either landed or did not); stop() then returns at once (it only waits for the
    accumulator while the sender runs) and closes the connections. The futures of undelivered records stay
    pending forever: the caller drops them. This reaches into aiokafka 0.12's producer (``_sender``; pinned in
    pyproject.toml); without it, it falls back to a bounded ``stop()``.
    """
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None and getattr(sender, "sender_task", None) is not None:
            await asyncio.wait_for(sender.close(), timeout_s)
        await asyncio.wait_for(producer.stop(), timeout_s)
    except (TimeoutError, KafkaError) as exc:
        log.warning("kafka producer abandoned uncleanly: %r", exc)
