"""Security settings of Kafka and Redis (issue 15), and the masking of secrets, without any server."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.kafka.client import security_options, translate
from adapters.kafka.config import KafkaSettings
from adapters.redis.client import connect, transient_errors
from adapters.redis.config import RedisSettings
from engine.errors import InvalidInput, TransientError
from engine.redaction import redact_url

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "ca.key"),
                    "-out", str(folder / "ca.pem"), "-days", "1", "-subj", "/CN=unit test CA"],
                   check=True, capture_output=True)
    return folder / "ca.pem"


@pytest.mark.parametrize(("text", "masked"), [
    ("redis://bob:hunter2@127.0.0.1:6379/0", "redis://bob:***@127.0.0.1:6379/0"),
    ("rediss://:hunter2@h:1/0 and kafka://h:9092", "rediss://:***@h:1/0 and kafka://h:9092"),
    ("redis://h:1/0?password=hunter2&db=1", "redis://h:1/0?password=***&db=1"),
    ("redis://bob@h:1/0", "redis://bob@h:1/0"),  # a user name alone is no secret
    ("no url at all: a:b@c", "no url at all: a:b@c"),
])
def test_redact_url_masks_passwords_and_keeps_the_rest(text: str, masked: str) -> None:
    assert redact_url(text) == masked


def _sasl(ca_file: Path, **overrides: object) -> KafkaSettings:
    values: dict[str, object] = {"bootstrap": "127.0.0.1:9093", "security_protocol": "SASL_SSL",
                                 "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
                                 "sasl_password": SecretStr(PASSWORD), "ssl_cafile": ca_file}
    return KafkaSettings(**values | overrides)  # type: ignore[arg-type]


def test_sasl_ssl_options_carry_the_credentials_and_a_verifying_tls_context(ca_file: Path) -> None:
    options = security_options(_sasl(ca_file))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc" and options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    relaxed = security_options(_sasl(ca_file, ssl_check_hostname=False))["ssl_context"]
    assert isinstance(relaxed, ssl.SSLContext) and not relaxed.check_hostname


def test_plaintext_has_no_tls_and_no_sasl() -> None:
    assert security_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("overrides", "named"), [
    ({"sasl_username": None}, "SIGSTREAM_KAFKA__SASL_USERNAME"),
    ({"sasl_password": None}, "SIGSTREAM_KAFKA__SASL_PASSWORD"),
    ({"security_protocol": "PLAINTEXT", "sasl_username": None, "sasl_password": None}, "SIGSTREAM_KAFKA__SSL_CAFILE"),
    ({"security_protocol": "SSL"}, "SIGSTREAM_KAFKA__SASL_USERNAME/SASL_PASSWORD"),
    ({"ssl_keyfile": "/no/such/key.pem"}, "SIGSTREAM_KAFKA__SSL_KEYFILE"),
    ({"ssl_cafile": "/no/such/ca.pem"}, "SIGSTREAM_KAFKA__SSL_CAFILE: no such file"),
])
def test_security_settings_that_do_not_fit_are_invalid_input_naming_the_variable(
    ca_file: Path, overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidInput, match=named) as raised:
        security_options(_sasl(ca_file, **overrides))
    assert PASSWORD not in raised.value.reason


def test_faust_gets_sasl_over_tls_credentials(ca_file: Path) -> None:
    import faust
    from faust.types.auth import AuthProtocol

    from adapters.kafka.app import broker_credentials

    credentials = broker_credentials(_sasl(ca_file))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL and credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "svc" and credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)
    mtls = broker_credentials(KafkaSettings(security_protocol="SSL", ssl_cafile=ca_file))
    assert isinstance(mtls, faust.SSLCredentials)
    assert broker_credentials(KafkaSettings()) is None


def test_refused_sasl_credentials_are_invalid_input_naming_the_settings() -> None:
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    refused = translate(SaslAuthenticationFailed("invalid credentials with SASL mechanism SCRAM-SHA-512"), "kafka")
    assert isinstance(refused, InvalidInput)
    assert "SIGSTREAM_KAFKA__SASL_PASSWORD" in refused.reason and "\n" not in refused.reason
    assert isinstance(translate(KafkaConnectionError("Unable to bootstrap"), "kafka"), TransientError)


def test_the_settings_secrets_are_masked_when_shown_and_kept_when_flags_are_applied(ca_file: Path) -> None:
    kafka = _sasl(ca_file)
    redis = RedisSettings(url=f"rediss://svc:{PASSWORD}@h:6380/0", password=SecretStr(PASSWORD))
    for shown in (kafka.model_dump_json(), redis.model_dump_json(), repr(kafka), str(kafka)):
        assert PASSWORD not in shown
    assert "rediss://svc:***@h:6380/0" in redis.model_dump_json()
    assert redis.model_dump()["url"] == f"rediss://svc:{PASSWORD}@h:6380/0"  # with_overrides re-validates this


def test_redis_credentials_in_settings_win_over_the_urls(ca_file: Path) -> None:
    client = connect(RedisSettings(url="rediss://old:stale@h:6380/0", username="svc", password=SecretStr(PASSWORD),
                                   ssl_cafile=ca_file))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("svc", PASSWORD)
    assert kwargs["ssl_ca_certs"] == str(ca_file) and kwargs["ssl_cert_reqs"] == "required"


@pytest.mark.parametrize(("settings", "named"), [
    ({"url": "redis://h:1/0", "ssl_cafile": "CA"}, "not rediss://"),
    ({"url": "redis://h:1/0", "username": "svc"}, "SIGSTREAM_REDIS__USERNAME is set without"),
])
def test_redis_settings_that_do_not_fit_are_invalid_input(settings: dict[str, object], named: str,
                                                          ca_file: Path) -> None:
    values = {k: (ca_file if v == "CA" else v) for k, v in settings.items()}
    with pytest.raises(InvalidInput, match=named):
        connect(RedisSettings(**values))  # type: ignore[arg-type]


async def test_redis_authentication_errors_are_invalid_input_not_an_outage() -> None:
    from redis.exceptions import AuthenticationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    with pytest.raises(InvalidInput, match="SIGSTREAM_REDIS__PASSWORD"):
        async with transient_errors("ping"):
            raise AuthenticationError("invalid username-password pair or user is disabled.")
    with pytest.raises(TransientError, match=r"redis://u:\*\*\*@h"):
        async with transient_errors("ping"):
            raise RedisConnectionError(f"Error 111 connecting to redis://u:{PASSWORD}@h. Connection refused.")
