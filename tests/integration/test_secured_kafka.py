"""Secured clusters (issue 15), against the brokers ``SIGSTREAM_KAFKA_SECURE=1 deploy/kafka/kafka.sh`` starts:
`sigstream worker` and `replay --to-kafka` over SASL_SSL (SCRAM-SHA-512, the project's own CA) put replay's
signals on signals.composite; a wrong password or an untrusted CA stops them within 30 s with exit 2 and one
line naming the setting; and no secret shows in any log line, dead letter, metric or `config show` of the run."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from adapters.kafka.client import KafkaError, ensure_topics, make_consumer, make_producer
from adapters.kafka.config import KafkaSettings
from sigstream.demo import write_demo_recording
from tests.integration.conftest import SecuredKafkaService, SecuredRedisService
from tests.integration.streaming import LEXICON, REPO, WorkerProcess, env_for, read_topic, settings_for, signal_records

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAIL_FAST_S = 30  # the bound for a misconfigured secured connection


def _cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigstream.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _other_ca(tmp: Path) -> Path:
    """A CA that signed nothing the brokers hold."""
    ca = tmp / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp / "other-ca.key"),
                    "-out", str(ca), "-days", "1", "-subj", "/CN=not the sigstream CA"],
                   check=True, capture_output=True)
    return ca


@dataclass
class SecuredRun:
    """One equivalence run over SASL_SSL (and the worker's Redis over TLS with an ACL user), and all it printed."""

    expected: list[dict]
    got: list[dict]
    dead_letters: list[bytes]
    texts: dict[str, str] = field(default_factory=dict)  # what -> everything it printed or served
    secrets: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def secured_run(secured_kafka_service: SecuredKafkaService, secured_redis_service: SecuredRedisService,
                tmp_path_factory: pytest.TempPathFactory) -> SecuredRun:
    kafka, redis = secured_kafka_service, secured_redis_service
    tmp = tmp_path_factory.mktemp("secured-run")
    unique = uuid.uuid4().hex[:10]
    recording = tmp / "demo.jsonl"
    write_demo_recording(recording, minutes=120)
    with recording.open("a") as f:  # one bad line, so the run has a dead letter to search
        f.write('{"ts_init": 1700000000000, "source": "bybit", "data": "not a frame"}\n')
    security = {k: v for k, v in kafka.sasl_settings().items() if k != "bootstrap"}
    settings = settings_for(kafka.sasl_ssl, unique, **security)
    asyncio.run(ensure_topics(settings))  # over SASL_SSL, as the commands do
    env = env_for(settings, tmp / "faust") | kafka.sasl_env()
    redis_env = {"SIGSTREAM_REDIS__USERNAME": redis.username, "SIGSTREAM_REDIS__PASSWORD": redis.password,
                 "SIGSTREAM_REDIS__SSL_CAFILE": str(redis.ca_file), "SIGSTREAM_REDIS__KEY_PREFIX": f"secured-{unique}"}
    run = SecuredRun([], [], [], secrets={"kafka sasl password": kafka.password, "redis password": redis.password,
                                          "redis requirepass": redis.default_password})

    in_process = tmp / "signals.jsonl"
    result = _cli(["replay", str(recording), "--interval", "1m", "--model", LEXICON, "--signals-out", str(in_process),
                   "--no-progress"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    run.texts["in-process replay"] = result.stdout + result.stderr
    run.expected = [orjson.loads(line) for line in in_process.read_bytes().splitlines()]

    metrics_port = _free_port()
    worker = WorkerProcess(settings, tmp / "worker", redis=redis.tls_url, extra_env=kafka.sasl_env() | redis_env,
                           args=("--metrics-port", str(metrics_port)))
    worker.start()
    try:
        published = _cli(["replay", str(recording), "--to-kafka", kafka.sasl_ssl, "--speed", "max"], env)
        run.texts["replay --to-kafka"] = published.stdout + published.stderr
        assert published.returncode == 0, published.stderr[-3000:]
        records = asyncio.run(read_topic(settings, settings.topics.signals, count=len(run.expected), timeout_s=180))
        run.dead_letters = [r.value for r in asyncio.run(read_topic(settings, settings.topics.deadletter, idle_s=2))]
        worker.assert_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            run.texts["worker /metrics"] = response.read().decode()
    finally:
        stopped = worker.stop()
    assert worker.log_path is not None
    run.texts["worker log"] = worker.log_path.read_text(errors="replace")
    assert stopped == 0, run.texts["worker log"][-4000:]  # a clean stop: the final commit went through TLS
    run.got = signal_records(records)

    # Secrets in the environment, a password inside the Redis URL too: config show must mask all of them.
    url_with_password = redis.tls_url.replace("rediss://", f"rediss://{redis.username}:{redis.default_password}@")
    for fmt in ("json", "toml"):
        shown = _cli(["config", "show", "--format", fmt], env | redis_env | {"SIGSTREAM_REDIS__URL": url_with_password})
        assert shown.returncode == 0, shown.stderr[-2000:]
        run.texts[f"config show --format {fmt}"] = shown.stdout + shown.stderr
    for command in ("worker", "replay", "bench"):  # --help shows defaults: none may be a secret from the environment
        helped = _cli([command, "--help"], env | redis_env)
        assert helped.returncode == 0, helped.stderr[-2000:]
        run.texts[f"{command} --help"] = helped.stdout + helped.stderr
    return run


def _per_symbol(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in records:
        out.setdefault(record["symbol"], []).append(record)
    return out


def test_worker_and_replay_to_kafka_over_sasl_ssl_give_replays_signals(secured_run: SecuredRun) -> None:
    assert secured_run.expected, "the in-process replay decided nothing"
    assert any(s["num_sources"] > 0 for s in secured_run.expected)  # news reached the decisions
    assert len(secured_run.got) == len(secured_run.expected), secured_run.texts["worker log"][-4000:]
    assert _per_symbol(secured_run.got) == _per_symbol(secured_run.expected)
    assert secured_run.dead_letters, "the recording's bad line should be on the deadletter topic"


def test_no_secret_in_any_log_line_dead_letter_metric_or_config_show(secured_run: SecuredRun) -> None:
    texts = dict(secured_run.texts)
    texts["dead letters"] = b"\n".join(secured_run.dead_letters).decode(errors="replace")
    assert "sigstream_" in texts["worker /metrics"]  # the endpoint really served the worker's metrics
    for what, secret in secured_run.secrets.items():
        assert len(secret) >= 16  # the scripts' random passwords: no chance of matching by accident
        for where, text in texts.items():
            for number, line in enumerate(text.splitlines(), 1):
                assert secret not in line, f"the {what} shows in {where}, line {number}"
    for fmt in ("json", "toml"):
        shown = texts[f"config show --format {fmt}"]
        assert shown.count("**********") >= 2, shown  # the SASL and Redis passwords, masked
        assert "rediss://sigstream:***@" in shown  # the URL's password, masked; the user name kept


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr[-3000:]  # the last thing said
    return errors[0]


@pytest.mark.parametrize("command", ["worker", "replay --to-kafka"])
def test_wrong_kafka_password_fails_fast_naming_the_setting(
    command: str, secured_kafka_service: SecuredKafkaService, tmp_path: Path, unique: str
) -> None:
    wrong = f"wrong-{unique}-password"
    env = env_for(settings_for(secured_kafka_service.sasl_ssl, unique), tmp_path / "faust")
    env |= secured_kafka_service.sasl_env(password=wrong)
    result = _run_command(command, env, tmp_path)
    line = _one_error_line(result)
    assert "SASL authentication failed" in line and "SIGSTREAM_KAFKA__SASL_PASSWORD" in line, line
    assert wrong not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["worker", "replay --to-kafka"])
def test_untrusted_ca_fails_fast_naming_the_setting(
    command: str, secured_kafka_service: SecuredKafkaService, tmp_path: Path, unique: str
) -> None:
    env = env_for(settings_for(secured_kafka_service.sasl_ssl, unique), tmp_path / "faust")
    env |= secured_kafka_service.sasl_env(ca_file=_other_ca(tmp_path))
    result = _run_command(command, env, tmp_path)
    line = _one_error_line(result)
    assert "SIGSTREAM_KAFKA__SSL_CAFILE" in line and "not trusted" in line, line
    assert secured_kafka_service.password not in result.stdout + result.stderr


def _run_command(command: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    if command == "worker":
        args = ["worker", "--model", LEXICON]
    else:
        recording = tmp / "small.jsonl"
        write_demo_recording(recording, minutes=10)
        args = ["replay", str(recording), "--to-kafka", env["SIGSTREAM_KAFKA__BOOTSTRAP"], "--speed", "max"]
    started = time.monotonic()
    try:
        return _cli(args, env, timeout=FAIL_FAST_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`sigstream {command}` still ran after {time.monotonic() - started:.0f} s:\n"
                             f"{(exc.stderr or b'')[-3000:]!r}") from None


async def test_mtls_client_certificate_reaches_the_broker_and_none_is_refused(
    secured_kafka_service: SecuredKafkaService, unique: str
) -> None:
    kafka = secured_kafka_service
    mtls = KafkaSettings(bootstrap=kafka.mtls, security_protocol="SSL", ssl_cafile=kafka.ca_file,
                         ssl_certfile=kafka.client_cert, ssl_keyfile=kafka.client_key)
    topic = f"mtls.{unique}"
    producer = make_producer(mtls)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over mTLS", key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(mtls, topic)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for rs in batch.values() for r in rs] == [b"over mTLS"]

    # The same listener without a client certificate: the broker ends the handshake, nothing is produced.
    anonymous = make_producer(mtls.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None}),
                              request_timeout_ms=5_000)
    with pytest.raises((KafkaError, TimeoutError)):
        await asyncio.wait_for(anonymous.start(), 15)
    await anonymous.stop()


def test_sasl_settings_that_do_not_fit_together_are_one_line_naming_the_variable(tmp_path: Path) -> None:
    password = "p" * 20
    env = env_for(KafkaSettings(), tmp_path) | {"SIGSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                                                 "SIGSTREAM_KAFKA__SASL_PASSWORD": password}
    result = _cli(["worker", "--model", LEXICON], env, timeout=FAIL_FAST_S)
    line = _one_error_line(result)
    assert "SIGSTREAM_KAFKA__SASL_USERNAME" in line, line
    assert password not in result.stderr
