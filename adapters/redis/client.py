"""The raw Redis connection: an asyncio client, and Redis failures translated to sigstream's errors."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from adapters.redis.config import RedisSettings
from engine.errors import InvalidInput, MissingDependency, TransientError
from engine.redaction import redact_url

try:
    import redis.asyncio as aioredis
    from redis.exceptions import (
        AuthenticationError,
        AuthenticationWrongNumberOfArgsError,
        NoPermissionError,
        OutOfMemoryError,
        ReadOnlyError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ModuleNotFoundError as exc:  # pragma: no cover - redis is a declared dependency
    raise MissingDependency("redis", "the Redis feature cache") from exc


_ENV = "SIGSTREAM_REDIS__"


def connect(settings: RedisSettings) -> aioredis.Redis:
    """An asyncio client for ``settings.url``; connections are opened lazily, on first command.

    ``username`` / ``password`` (AUTH, ACL users) win over credentials in the URL; a ``rediss://`` URL speaks
    TLS, checked against ``ssl_cafile`` (else the system CAs).
    """
    if settings.url is None:
        raise InvalidInput("no Redis URL: give --redis URL or SIGSTREAM_REDIS__URL")
    problem = settings.security_problem()
    if problem is not None:
        raise InvalidInput(problem)
    options: dict[str, object] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "health_check_interval": 30,
    }
    url = settings.url
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
        if settings.username:
            options["username"] = settings.username
        url = _without_credentials(url)  # redis-py lets the URL's credentials win over keywords; ours win
    elif settings.username and not urlsplit(url).username:
        options["username"] = settings.username  # the URL holds the password only
    if settings.uses_tls():
        # Only for rediss://: redis-py's plain connection rejects the ssl_* keywords.
        options |= {
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": str(settings.ssl_cafile) if settings.ssl_cafile else None,
            "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
            "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            "ssl_check_hostname": settings.ssl_check_hostname,
        }
    try:
        return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]  # from_url takes **kwargs of mixed types
    except ValueError as exc:  # a malformed URL; its text may hold the URL, password included
        raise InvalidInput(f"{_ENV}URL / --redis: {redact_url(str(exc))} (got {redact_url(settings.url)})") from None


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _misconfigured(exc: BaseException) -> str | None:
    """Why ``exc`` is a configuration problem no retry fixes (credentials, permissions, TLS), naming the
    settings and never their values; None: it is not one."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return (f"authentication failed ({exc}): check {_ENV}USERNAME and {_ENV}PASSWORD (or the URL's "
                "credentials)")
    if isinstance(exc, NoPermissionError):
        return f"the ACL user lacks a permission ({exc}): check {_ENV}USERNAME's ACL rules"
    cause: BaseException | None = exc
    while cause is not None:  # redis-py raises its ConnectionError from within the ssl error
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
                return (f"{_ENV}SSL_CHECK_HOSTNAME: the server certificate does not name this host "
                        f"({cause.verify_message})")
            return f"{_ENV}SSL_CAFILE: the server certificate is not trusted ({cause.verify_message})"
        cause = cause.__cause__ or cause.__context__
    return None


@asynccontextmanager
async def transient_errors(what: str) -> AsyncIterator[None]:
    """Turn Redis connection failures and timeouts into :class:`TransientError` (retry, don't crash).

    READONLY (a replica during failover) and OOM replies are transient too: the write succeeds once
    the new primary is up or memory is freed, so they must not kill the background flusher.
    """
    try:
        yield
    except (AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError) as exc:
        raise InvalidInput(f"redis {what} failed: {_misconfigured(exc)}") from None
    except (
        RedisConnectionError,
        RedisTimeoutError,
        ReadOnlyError,
        OutOfMemoryError,
        ConnectionError,
        TimeoutError,
        OSError,
    ) as exc:
        problem = _misconfigured(exc)
        if problem is not None:
            raise InvalidInput(f"redis {what} failed: {problem}") from None
        raise TransientError(f"redis {what} failed: {redact_url(str(exc))}") from exc
