"""The raw Redis connection: an asyncio client, and Redis failures translated to sigstream's errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.redis.config import RedisSettings
from engine.errors import InvalidInput, MissingDependency, TransientError

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import OutOfMemoryError, ReadOnlyError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ModuleNotFoundError as exc:  # pragma: no cover - redis is a declared dependency
    raise MissingDependency("redis", "the Redis feature cache") from exc


def connect(settings: RedisSettings) -> aioredis.Redis:
    """An asyncio client for ``settings.url``; connections are opened lazily, on first command."""
    if settings.url is None:
        raise InvalidInput("no Redis URL: give --redis URL or SIGSTREAM_REDIS__URL")
    return aioredis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
    )


@asynccontextmanager
async def transient_errors(what: str) -> AsyncIterator[None]:
    """Turn Redis connection failures and timeouts into :class:`TransientError` (retry, don't crash).

    READONLY (a replica during failover) and OOM replies are transient too: the write succeeds once
    the new primary is up or memory is freed, so they must not kill the background flusher.
    """
    try:
        yield
    except (
        RedisConnectionError,
        RedisTimeoutError,
        ReadOnlyError,
        OutOfMemoryError,
        ConnectionError,
        TimeoutError,
        OSError,
    ) as exc:
        raise TransientError(f"redis {what} failed: {exc}") from exc
