"""Helpers for the Kafka worker tests: a worker subprocess, topic settings per test, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from adapters.kafka.client import consume, make_consumer
from adapters.kafka.config import KafkaSettings, TopicNames
from engine.events import Bar, Interval, NewsItem
from engine.serialization import decode_event, decode_signal

REPO = Path(__file__).resolve().parents[2]
LEXICON = "tests.support.lexicon_model:LexiconSentimentModel"


def settings_for(bootstrap: str, unique: str, **overrides: object) -> KafkaSettings:
    topics = TopicNames(
        **{name: f"{default}.{unique}" for name, default in TopicNames().model_dump().items() if default}
    )
    values: dict[str, object] = {"partitions": 3} | overrides
    return KafkaSettings(bootstrap=bootstrap, topics=topics, app_id=f"sigstream-{unique}", **values)  # type: ignore[arg-type]


def env_for(settings: KafkaSettings, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    for name, value in settings.topics.model_dump().items():
        env[f"SIGSTREAM_KAFKA__TOPICS__{name.upper()}"] = value
    env["SIGSTREAM_KAFKA__BOOTSTRAP"] = settings.bootstrap
    env["SIGSTREAM_KAFKA__APP_ID"] = settings.app_id
    env["SIGSTREAM_KAFKA__PARTITIONS"] = str(settings.partitions)
    env["SIGSTREAM_KAFKA__PROCESSING_GUARANTEE"] = settings.processing_guarantee
    env["SIGSTREAM_KAFKA__COMMIT_INTERVAL_S"] = str(settings.commit_interval_s)
    env["SIGSTREAM_KAFKA__DATA_DIR"] = str(data_dir)
    return env


@dataclass
class WorkerProcess:
    """``sigstream worker`` as users run it, in its own process group so signals reach only it."""

    settings: KafkaSettings
    data_dir: Path
    redis: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    model: str | None = LEXICON  # None: the configured transformers model, as users run it
    args: tuple[str, ...] = ()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"worker-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "sigstream.cli", "worker", "--loglevel", "info", *self.args]
        if self.model is not None:
            cmd += ["--model", self.model]
        if self.redis:
            cmd += ["--redis", self.redis]
        env = env_for(self.settings, self.data_dir) | self.extra_env
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"worker ignored {sig!r} for {timeout}s:\n{self.log()}") from None
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path else ""

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"worker exited:\n{self.log()}"


async def read_topic(
    settings: KafkaSettings, topic: str, *, count: int | None = None, idle_s: float = 3.0, timeout_s: float = 90.0
) -> list:
    consumer = make_consumer(settings, topic)
    await consumer.start()
    try:
        return await consume(consumer, count=count, idle_s=idle_s, timeout_s=timeout_s)
    finally:
        await consumer.stop()


def decoded(records: list) -> list:
    """``encode_event`` payloads (market.bars, sentiment.scores, deadletter, ...) back into events."""
    return [decode_event(r.value) for r in records]


def signal_records(records: list) -> list[dict]:
    """signals.composite values as v1 signal records (dicts); raises InvalidInput on anything else."""
    return [decode_signal(r.value) for r in records]


def bars(symbol: str, n: int, *, start_index: int = 0, t0: int = 1_700_000_000_000) -> list[Bar]:
    out = []
    for i in range(start_index, start_index + n):
        start = t0 + i * 60_000
        price = 100.0 + (i % 11) - (i % 4) * 0.7
        out.append(
            Bar(
                symbol,
                Interval.M1,
                start,
                price,
                price + 1,
                price - 1,
                price,
                5.0 + i % 3,
                start + 60_000,
                start + 60_000 + 5,
            )
        )
    return out


def news(news_id: str, headline: str, ts: int, symbols: tuple[str, ...] = ()) -> NewsItem:
    return NewsItem(news_id, "test", headline, "", symbols, (), "", ts, ts + 10)
