"""Real Kafka and Redis for integration tests, started by the project's own deploy scripts.

The services are session-scoped: started once (the first run also downloads Kafka from Maven
Central into ``.cache/``) and stopped at the end. If Java, Maven or apt are missing the fixtures
FAIL: an integration run that silently tests nothing is worse than a red one.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
REDIS_SH = REPO / "deploy" / "redis" / "redis.sh"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _run_script(script: Path, action: str, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(  # the deploy scripts are the code under test here, so run them as users do
        [str(script), action], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{script.name} {action} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _value(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    pytest.fail(f"no {name}=... in script output:\n{output}")


@dataclass
class KafkaService:
    """A broker started by deploy/kafka/kafka.sh; ``restart`` keeps its port and data."""

    bootstrap: str
    env: dict[str, str]

    def stop(self) -> None:
        _run_script(KAFKA_SH, "stop", self.env, timeout=120)

    def start(self) -> None:
        out = _run_script(KAFKA_SH, "start", self.env, timeout=600)
        assert _value(out, "KAFKA_BOOTSTRAP") == self.bootstrap

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class RedisService:
    """A redis-server started by deploy/redis/redis.sh; ``start`` after ``stop`` reuses the port."""

    url: str
    env: dict[str, str]

    def stop(self) -> None:
        _run_script(REDIS_SH, "stop", self.env, timeout=60)

    def start(self) -> None:
        out = _run_script(REDIS_SH, "start", self.env, timeout=600)
        assert _value(out, "REDIS_URL") == self.url


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    env = dict(os.environ, SIGSTREAM_KAFKA_DIR=str(tmp_path_factory.mktemp("kafka")))
    # First run: Maven downloads ~50 MB of jars; later runs use .cache/kafka.
    out = _run_script(KAFKA_SH, "start", env, timeout=600)
    service = KafkaService(_value(out, "KAFKA_BOOTSTRAP"), env)
    try:
        yield service
    finally:
        _run_script(KAFKA_SH, "stop", env, timeout=120)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    env = dict(os.environ, SIGSTREAM_REDIS_DIR=str(tmp_path_factory.mktemp("redis")))
    out = _run_script(REDIS_SH, "start", env, timeout=600)
    service = RedisService(_value(out, "REDIS_URL"), env)
    try:
        yield service
    finally:
        _run_script(REDIS_SH, "stop", env, timeout=60)


@pytest.fixture
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    return kafka_service.bootstrap


@pytest.fixture
def redis_url(redis_service: RedisService) -> str:
    return redis_service.url


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests never share topics, groups or key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str, unique: str) -> Callable[..., Awaitable[str]]:
    """Factory: ``await kafka_topic("name", partitions=2)`` creates a fresh topic and returns its name."""
    from adapters.kafka.client import create_topics

    async def make(name: str = "t", partitions: int = 1) -> str:
        topic = f"{name}.{unique}"
        await create_topics(kafka_bootstrap, [topic], partitions)
        return topic

    return make


@pytest.fixture
async def kafka_producer(kafka_bootstrap: str) -> AsyncIterator[Callable[..., Awaitable[object]]]:
    """Factory: ``await kafka_producer()`` returns a started idempotent producer, stopped at teardown."""
    from adapters.kafka.client import make_producer
    from adapters.kafka.config import KafkaSettings

    started = []

    async def make(**overrides: object) -> object:
        producer = make_producer(KafkaSettings(bootstrap=kafka_bootstrap), **overrides)
        await producer.start()
        started.append(producer)
        return producer

    yield make
    for producer in started:
        await producer.stop()


@pytest.fixture
async def kafka_consumer(kafka_bootstrap: str) -> AsyncIterator[Callable[..., Awaitable[object]]]:
    """Factory: ``await kafka_consumer(topic, ...)``: a started consumer reading from the earliest offset."""
    from adapters.kafka.client import make_consumer
    from adapters.kafka.config import KafkaSettings

    started = []

    async def make(*topics: str, **overrides: object) -> object:
        consumer = make_consumer(KafkaSettings(bootstrap=kafka_bootstrap), *topics, **overrides)
        await consumer.start()
        started.append(consumer)
        return consumer

    yield make
    for consumer in started:
        await consumer.stop()


# -- secured clusters (issue 15): SASL_SSL / mTLS Kafka and a Redis with AUTH, ACL user and TLS ------------------
def _values(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@dataclass
class SecuredKafkaService:
    """A broker from ``SIGSTREAM_KAFKA_SECURE=1 deploy/kafka/kafka.sh``: PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and
    SSL with a required client certificate (mTLS), one CA."""

    plaintext: str
    sasl_ssl: str
    mtls: str
    ca_file: Path
    client_cert: Path
    client_key: Path
    username: str
    password: str
    env: dict[str, str]

    def sasl_env(self, password: str | None = None, ca_file: Path | None = None) -> dict[str, str]:
        """``SIGSTREAM_KAFKA__...`` for SCRAM over TLS, as a user sets them (a wrong password or CA on request)."""
        return {
            "SIGSTREAM_KAFKA__BOOTSTRAP": self.sasl_ssl,
            "SIGSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "SIGSTREAM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "SIGSTREAM_KAFKA__SASL_USERNAME": self.username,
            "SIGSTREAM_KAFKA__SASL_PASSWORD": self.password if password is None else password,
            "SIGSTREAM_KAFKA__SSL_CAFILE": str(ca_file or self.ca_file),
        }

    def sasl_settings(self, **overrides: object) -> dict[str, object]:
        """The same as :class:`KafkaSettings` keyword arguments."""
        from pydantic import SecretStr

        return {"bootstrap": self.sasl_ssl, "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": self.username, "sasl_password": SecretStr(self.password),
                "ssl_cafile": self.ca_file} | overrides


@pytest.fixture(scope="session")
def secured_kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafkaService]:
    run = tmp_path_factory.mktemp("kafka-secured")
    env = dict(os.environ, SIGSTREAM_KAFKA_DIR=str(run), SIGSTREAM_KAFKA_SECURE="1")
    env.pop("SIGSTREAM_KAFKA_SASL_PASSWORD", None)  # the script makes a random one
    out = _values(_run_script(KAFKA_SH, "start", env, timeout=600))
    try:
        yield SecuredKafkaService(
            plaintext=out["KAFKA_BOOTSTRAP"], sasl_ssl=out["KAFKA_SASL_SSL_BOOTSTRAP"], mtls=out["KAFKA_SSL_BOOTSTRAP"],
            ca_file=Path(out["KAFKA_CA_FILE"]), client_cert=Path(out["KAFKA_CLIENT_CERT"]),
            client_key=Path(out["KAFKA_CLIENT_KEY"]), username=out["KAFKA_SASL_USERNAME"],
            password=Path(out["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(), env=env,
        )
    finally:
        _run_script(KAFKA_SH, "stop", env, timeout=120)


@dataclass
class SecuredRedisService:
    """A redis-server from ``SIGSTREAM_REDIS_SECURE=1 deploy/redis/redis.sh``: requirepass on the plain port, an
    ACL user, and a TLS port."""

    url: str
    tls_url: str
    ca_file: Path
    username: str
    password: str  # the ACL user's
    default_password: str  # requirepass
    env: dict[str, str]


@pytest.fixture(scope="session")
def secured_redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedisService]:
    run = tmp_path_factory.mktemp("redis-secured")
    env = dict(os.environ, SIGSTREAM_REDIS_DIR=str(run), SIGSTREAM_REDIS_SECURE="1")
    for name in ("SIGSTREAM_REDIS_PASSWORD", "SIGSTREAM_REDIS_DEFAULT_PASSWORD"):
        env.pop(name, None)
    out = _values(_run_script(REDIS_SH, "start", env, timeout=600))
    try:
        yield SecuredRedisService(
            url=out["REDIS_URL"], tls_url=out["REDIS_TLS_URL"], ca_file=Path(out["REDIS_CA_FILE"]),
            username=out["REDIS_USERNAME"], password=Path(out["REDIS_PASSWORD_FILE"]).read_text().strip(),
            default_password=Path(out["REDIS_DEFAULT_PASSWORD_FILE"]).read_text().strip(), env=env,
        )
    finally:
        _run_script(REDIS_SH, "stop", env, timeout=60)
