"""Raw Kafka protocol helpers over aiokafka: topic admin, producers, consumers, and error translation."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable

from adapters.kafka.config import KafkaSettings
from engine.errors import FatalError, InvalidInput, MissingDependency, SigstreamError, TransientError
from engine.redaction import redact_url

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import (
        AuthenticationFailedError,
        AuthenticationMethodNotSupported,
        BrokerNotAvailableError,
        IllegalSaslStateError,
        KafkaConnectionError,
        KafkaError,
        KafkaTimeoutError,
        KafkaUnavailableError,
        OutOfOrderSequenceNumber,
        ProducerClosed,
        ReplicaNotAvailableError,
        SaslAuthenticationFailed,
        TopicAlreadyExistsError,
        UnknownProducerId,
        UnsupportedSaslMechanismError,
    )
    from aiokafka.helpers import create_ssl_context
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
    "explain",
    "is_transient",
    "make_admin",
    "make_consumer",
    "make_producer",
    "security_options",
    "start_producer",
    "translate",
]

_ENV = "SIGSTREAM_KAFKA__"


# -- security -------------------------------------------------------------------------------------
def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of SSL / SASL_SSL: ``ssl_cafile`` (else the system CAs), the mTLS client certificate,
    and the host name check, built by aiokafka's own helper."""
    password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
    try:
        context = create_ssl_context(cafile=settings.ssl_cafile, certfile=settings.ssl_certfile,
                                     keyfile=settings.ssl_keyfile, password=password)
    except ssl.SSLError as exc:
        # Not the exception's text: OpenSSL's reasons name no secret, but this keeps the line about settings.
        raise InvalidInput(
            f"{_ENV}SSL_CAFILE / SSL_CERTFILE / SSL_KEYFILE / SSL_KEY_PASSWORD: cannot load them ({exc.reason}): "
            "PEM files, the key matching the certificate, the right key password"
        ) from None
    context.check_hostname = settings.ssl_check_hostname
    return context


def security_options(settings: KafkaSettings) -> dict[str, object]:
    """aiokafka's security keyword arguments for ``settings`` (the same for producers, consumers and admins).

    Raises :class:`InvalidInput` naming the variables when the settings do not fit together.
    """
    problem = settings.security_problem()
    if problem is not None:
        raise InvalidInput(problem)
    options: dict[str, object] = {"security_protocol": settings.security_protocol}
    if settings.uses_tls():
        options["ssl_context"] = ssl_context(settings)
    if settings.uses_sasl():
        assert settings.sasl_password is not None  # security_problem() checked it
        options |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    return options


def make_admin(settings: KafkaSettings, **overrides: object) -> AIOKafkaAdminClient:
    """An admin client with the security settings."""
    options: dict[str, object] = {"bootstrap_servers": settings.bootstrap, **security_options(settings)}
    options.update(overrides)
    return AIOKafkaAdminClient(**options)


def _as_settings(target: KafkaSettings | str) -> KafkaSettings:
    # A bare bootstrap string is a PLAINTEXT cluster (tests and tools that only have an address).
    return target if isinstance(target, KafkaSettings) else KafkaSettings(bootstrap=target)


async def tls_problem(settings: KafkaSettings, timeout_s: float = 5.0) -> str | None:
    """Why a TLS handshake with the brokers fails for a reason no retry fixes (an untrusted certificate, a
    host name mismatch, a port without TLS), naming the setting; None when it succeeds or the broker is away.

    aiokafka logs such a failure and reports only "Unable to bootstrap", which reads like an outage.
    """
    if not settings.uses_tls():
        return None
    context = ssl_context(settings)
    for address in settings.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=context), timeout_s)
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                return (f"{_ENV}SSL_CHECK_HOSTNAME: the certificate of the broker at {host}:{port} does not name "
                        f"{host} ({exc.verify_message}); connect by a name it holds")
            return (f"{_ENV}SSL_CAFILE: the certificate of the broker at {host}:{port} is not trusted "
                    f"({exc.verify_message}); give the CA that signed it")
        except ssl.SSLError as exc:
            if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
                return (f"{_ENV}SECURITY_PROTOCOL={settings.security_protocol}: the broker at {host}:{port} does "
                        "not speak TLS on that port (a PLAINTEXT or SASL_PLAINTEXT listener?)")
            continue
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
    return None


async def sasl_problem(settings: KafkaSettings, timeout_s: float = 10.0) -> SigstreamError | None:
    """The broker's refusal of the SASL credentials, as :func:`translate` words it; None when they are accepted
    or the broker is away.

    aiokafka's clients probe the broker's API versions after connecting and so speak the SASL handshake v0,
    after which a broker answers wrong credentials by closing the connection: it reads like an outage. One
    connection with a version hint speaks v1, and the broker says what it refused.
    """
    if not settings.uses_sasl():
        return None
    from aiokafka.conn import create_conn  # aiokafka's own connection, as its clients open it (pinned 0.12)

    options = security_options(settings)
    for address in settings.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host.strip("[]") or "localhost", int(port), version_hint=(1, 0, 0),
                            request_timeout_ms=int(timeout_s * 1000), **options), timeout_s)
        except _AUTH_FAILED as exc:
            return translate(exc, f"kafka at {address.strip()}")
        except (KafkaError, OSError, TimeoutError, ValueError):
            continue
        conn.close()
        return None
    return None


async def explain(exc: KafkaError, settings: KafkaSettings, context: str) -> SigstreamError:
    """:func:`translate`, and a connection failure that is really a misconfiguration (an untrusted certificate,
    refused SASL credentials) as :class:`InvalidInput` naming the setting."""
    if isinstance(exc, KafkaConnectionError):
        problem = await tls_problem(settings)
        if problem is not None:
            return InvalidInput(f"{context}: {problem}")
        refused = await sasl_problem(settings)
        if refused is not None:
            return refused
    return translate(exc, context)


async def create_topics(
    target: KafkaSettings | str, names: Iterable[str], partitions: int, replication_factor: int = 1
) -> None:
    """Create topics that do not exist yet; existing ones are left as they are. ``target``: the settings (with
    their security), or a PLAINTEXT bootstrap address."""
    settings = _as_settings(target)
    bootstrap = settings.bootstrap
    admin = make_admin(settings)
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
        raise await explain(exc, settings, f"kafka admin at {bootstrap}") from exc
    finally:
        await admin.close()


async def partition_counts(target: KafkaSettings | str, topics: Iterable[str]) -> dict[str, int | None]:
    """How many partitions each topic has on the broker (None: it does not exist), in one admin session."""
    settings = _as_settings(target)
    names = list(dict.fromkeys(topics))
    admin = make_admin(settings)
    try:
        await admin.start()
        described = await admin.describe_topics(names)
    except KafkaError as exc:
        raise await explain(exc, settings, f"kafka admin at {settings.bootstrap}") from exc
    finally:
        await admin.close()
    counts: dict[str, int | None] = dict.fromkeys(names)
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def partition_count(target: KafkaSettings | str, topic: str) -> int | None:
    """How many partitions ``topic`` has on the broker; None when it does not exist."""
    return (await partition_counts(target, [topic]))[topic]


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
    await create_topics(settings, settings.topics.all(), settings.partitions, settings.replication_factor)


def make_producer(settings: KafkaSettings, **overrides: object) -> AIOKafkaProducer:
    """An idempotent (when configured) producer: acks=all, so a broker restart loses nothing acknowledged."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap,
        "acks": "all",
        "enable_idempotence": settings.idempotent_producer,
        "linger_ms": settings.linger_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "max_batch_size": 256 * 1024,
        **security_options(settings),
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
        **security_options(settings),
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

# The broker refused the credentials or the mechanism: no retry helps, the settings must change.
_AUTH_FAILED = (SaslAuthenticationFailed, AuthenticationFailedError, IllegalSaslStateError,
                UnsupportedSaslMechanismError, AuthenticationMethodNotSupported)


def is_transient(exc: BaseException) -> bool:
    """Whether a Kafka client error may pass when retried (after a broker restart, a leader move, ...)."""
    return isinstance(exc, KafkaError) and (bool(getattr(exc, "retriable", False)) or isinstance(exc, _TRANSIENT_TOO))


def translate(exc: KafkaError, context: str = "kafka") -> SigstreamError:
    """A Kafka client error as sigstream's error: :class:`TransientError` (retry) or :class:`FatalError` (stop).

    Transient: connection lost, no leader, not the leader, timeouts, node not ready, not enough replicas...
    (aiokafka's ``retriable`` errors, plus timeouts and producer-sequence errors, see ``_TRANSIENT_TOO``).
    Fatal: everything else (record too large, authorization, invalid topic or configuration).
    Invalid input (exit 2): the broker refused the SASL credentials or mechanism; the line names the settings.
    """
    text = redact_url(str(exc))
    name = type(exc).__name__
    if isinstance(exc, _AUTH_FAILED):
        return InvalidInput(" ".join(
            f"{context}: SASL authentication failed ({text}): check {_ENV}SASL_USERNAME, {_ENV}SASL_PASSWORD and "
            f"{_ENV}SASL_MECHANISM".split()))
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
            raise await explain(exc, settings, f"kafka producer at {settings.bootstrap}") from exc
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
