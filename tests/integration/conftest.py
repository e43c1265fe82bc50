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
