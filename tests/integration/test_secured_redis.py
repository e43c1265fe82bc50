"""Secured Redis (issue 15), against ``SIGSTREAM_REDIS_SECURE=1 deploy/redis/redis.sh``: requirepass, an ACL user
and a TLS port (Debian's redis-server is built with TLS). The feature cache works as the ACL user over rediss://;
a wrong password or an untrusted CA stops the worker within 30 s with exit 2 and one line that names the setting
and never holds the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.redis.client import connect, transient_errors
from adapters.redis.config import RedisSettings
from adapters.redis.store import RedisFeatureStore
from engine.errors import InvalidInput
from tests.integration.conftest import SecuredKafkaService, SecuredRedisService
from tests.integration.streaming import LEXICON, REPO, env_for, settings_for
from tests.integration.test_redis_feature_store import run_engine, save_and_flush

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAIL_FAST_S = 30


def _acl_user_over_tls(redis: SecuredRedisService, unique: str, **overrides: object) -> RedisSettings:
    values: dict[str, object] = {"url": redis.tls_url, "username": redis.username,
                                 "password": SecretStr(redis.password), "ssl_cafile": redis.ca_file,
                                 "key_prefix": f"secured-{unique}"}
    return RedisSettings(**values | overrides)  # type: ignore[arg-type]


async def test_feature_cache_round_trips_over_tls_as_an_acl_user(secured_redis_service: SecuredRedisService,
                                                                 unique: str) -> None:
    bars, feats = run_engine("BTCUSDT", 30)
    store = RedisFeatureStore(_acl_user_over_tls(secured_redis_service, unique))
    try:
        await save_and_flush(store, bars, feats)
        assert await store.latest("BTCUSDT") == feats[-1]
        assert await store.recent_bars("BTCUSDT", 5) == bars[-5:]
        assert await store.symbols() == ["BTCUSDT"]
    finally:
        await store.close()


async def test_the_acl_user_may_not_administer_redis(secured_redis_service: SecuredRedisService, unique: str) -> None:
    client = connect(_acl_user_over_tls(secured_redis_service, unique))
    try:
        with pytest.raises(InvalidInput, match="lacks a permission"):
            async with transient_errors("config read"):
                await client.config_get("requirepass")
    finally:
        await client.aclose()


async def test_requirepass_in_the_url_works_and_a_wrong_one_is_never_repeated(
    secured_redis_service: SecuredRedisService, unique: str
) -> None:
    redis = secured_redis_service
    good = RedisFeatureStore(RedisSettings(url=redis.url.replace("redis://", f"redis://:{redis.default_password}@"),
                                           key_prefix=f"secured-{unique}"))
    try:
        await good.ping()
    finally:
        await good.close()
    wrong = f"wrong-{unique}"
    store = RedisFeatureStore(RedisSettings(url=redis.url.replace("redis://", f"redis://:{wrong}@")))
    try:
        with pytest.raises(InvalidInput, match="SIGSTREAM_REDIS__PASSWORD") as raised:
            await store.ping()
    finally:
        await store.close()
    assert wrong not in str(raised.value)


def _worker(kafka: SecuredKafkaService, redis_url: str, env: dict[str, str], tmp: Path,
            unique: str) -> subprocess.CompletedProcess[str]:
    # The broker's PLAINTEXT listener: only Redis is misconfigured here.
    full = env_for(settings_for(kafka.plaintext, unique), tmp / "faust") | env
    cmd = [sys.executable, "-m", "sigstream.cli", "worker", "--model", LEXICON, "--redis", redis_url]
    try:
        return subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True, timeout=FAIL_FAST_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the worker still ran after {FAIL_FAST_S} s:\n{(exc.stderr or b'')[-3000:]!r}") from None


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("where", ["environment", "url"])
def test_wrong_redis_password_stops_the_worker_fast_naming_the_setting(
    where: str, secured_kafka_service: SecuredKafkaService, secured_redis_service: SecuredRedisService,
    tmp_path: Path, unique: str,
) -> None:
    redis = secured_redis_service
    wrong = f"wrong-{unique}-password"
    env = {"SIGSTREAM_REDIS__USERNAME": redis.username, "SIGSTREAM_REDIS__SSL_CAFILE": str(redis.ca_file)}
    url = redis.tls_url
    if where == "environment":
        env["SIGSTREAM_REDIS__PASSWORD"] = wrong
    else:
        url = url.replace("rediss://", f"rediss://{redis.username}:{wrong}@")
    result = _worker(secured_kafka_service, url, env, tmp_path, unique)
    line = _one_error_line(result)
    assert "authentication failed" in line and "SIGSTREAM_REDIS__PASSWORD" in line, line
    assert wrong not in result.stdout + result.stderr


def test_untrusted_redis_ca_stops_the_worker_fast_naming_the_setting(
    secured_kafka_service: SecuredKafkaService, secured_redis_service: SecuredRedisService, tmp_path: Path,
    unique: str,
) -> None:
    redis = secured_redis_service
    env = {"SIGSTREAM_REDIS__USERNAME": redis.username, "SIGSTREAM_REDIS__PASSWORD": redis.password,
           # The Kafka CA: a real CA, just not the one that signed Redis's certificate.
           "SIGSTREAM_REDIS__SSL_CAFILE": str(secured_kafka_service.ca_file)}
    result = _worker(secured_kafka_service, redis.tls_url, env, tmp_path, unique)
    line = _one_error_line(result)
    assert "SIGSTREAM_REDIS__SSL_CAFILE" in line and "not trusted" in line, line
    assert redis.password not in result.stdout + result.stderr
