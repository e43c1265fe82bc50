"""Settings of the Kafka transport (``SIGSTREAM_KAFKA__...``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def default_cache_dir() -> Path:
    """``$SIGSTREAM_CACHE``, else ``$XDG_CACHE_HOME/sigstream``, else ``~/.cache/sigstream``: the model adapter's
    ``cache_root`` rule, repeated because adapters never import each other."""
    if os.environ.get("SIGSTREAM_CACHE"):
        return Path(os.environ["SIGSTREAM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sigstream"


class TopicNames(BaseModel):
    """Topic names; every one can be renamed, e.g. ``SIGSTREAM_KAFKA__TOPICS__SIGNALS=prod.signals``."""

    model_config = ConfigDict(frozen=True)

    market_raw: str = Field("market.raw", description="Raw venue frames and market events, keyed by symbol.")
    market_bars: str = Field("market.bars", description="Closed bars with their features, keyed by symbol.")
    news_raw: str = Field("news.raw", description="News items, keyed by news id.")
    sentiment: str = Field("sentiment.scores", description="Per-news sentiment scores, keyed by news id.")
    signals: str = Field("signals.composite", description="Composite signals, keyed by symbol.")
    deadletter: str = Field("deadletter", description="Records that could not be processed, with the reason.")
    state: str = Field(
        "", description="Compacted topic of the workers' partition snapshots; empty: '<app_id>.state'."
    )

    def all(self) -> tuple[str, ...]:
        return (
            self.market_raw,
            self.market_bars,
            self.news_raw,
            self.sentiment,
            self.signals,
            self.deadletter,
        )


class KafkaSettings(BaseModel):
    """Kafka brokers, topics and delivery guarantees for the faust worker and the publisher."""

    model_config = ConfigDict(frozen=True)

    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of brokers.")
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of each topic sigstream creates.")
    replication_factor: int = Field(1, ge=1, description="Replicas of each topic sigstream creates.")
    app_id: str = Field("sigstream", description="faust application id = Kafka consumer group id.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="faust processing guarantee; exactly_once uses Kafka transactions."
    )
    idempotent_producer: bool = Field(True, description="Producer retries never write duplicates (acks=all).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often processed offsets are committed.")
    snapshots: bool = Field(
        True, description="Snapshot each partition's engine state every second, so a restart continues exactly."
    )
    stream_buffer: int = Field(65_536, ge=16, description="Records faust buffers per stream before pausing.")
    linger_ms: int = Field(5, ge=0, description="Producer linger: small batches, low latency.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="A worker silent this long (killed, hung) loses its partitions to the others."
    )
    heartbeat_interval_s: float = Field(3.0, gt=0, description="How often a worker tells the group it is alive.")
    max_outage_s: float = Field(
        300.0, gt=0, description="Longest the publisher waits for an unreachable broker before it exits 1."
    )
    stop_timeout_s: float = Field(
        20.0, gt=0, description="Longest a stop may take (e.g. an unreachable broker); then the worker exits 1."
    )
    request_timeout_ms: int = Field(30_000, ge=1000, description="Producer/consumer request timeout.")
    data_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "faust",
        description="faust's local data folder (tables are in memory); made absolute and created at start.",
    )
    # -- security: every client sigstream builds (faust worker, publisher, admin, snapshots, bench) uses these.
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="How clients talk to the brokers: PLAINTEXT, SSL (TLS, mTLS with a client "
        "certificate), SASL_PLAINTEXT or SASL_SSL (user and password over TLS, e.g. Confluent Cloud, MSK)."
    )
    sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user name (required with SASL_*).")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (required with SASL_*); from the environment, never printed."
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates; unset: the system's CAs."
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain) for mTLS; it may hold the private key too."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile, when it is a separate file.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted ssl_keyfile.")
    ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to (keep it on)."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # faust resolves a relative folder against the working directory and never creates its parent.
        return path.expanduser().resolve()

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _absolute_file(cls, path: Path | None) -> Path | None:
        # Absolute, so a worker started in another folder (the bench's, a service manager's) finds the same file.
        return None if path is None else path.expanduser().resolve()

    def state_topic(self) -> str:
        """Snapshots belong to one consumer group: by default the topic is named after the app id."""
        return self.topics.state or f"{self.app_id}.state"

    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def security_problem(self) -> str | None:
        """What is inconsistent in the security settings, naming the variables (never a value); None: nothing.

        Checked when a client is built rather than by a model validator: pydantic puts the whole section,
        password included, into a validation error's input, and the CLI prints that input.
        """
        env = "SIGSTREAM_KAFKA__"
        protocol = f"{env}SECURITY_PROTOCOL={self.security_protocol}"
        if self.uses_sasl():
            missing = [f"{env}{name.upper()}" for name in ("sasl_username", "sasl_password") if not getattr(self, name)]
            if missing:
                return f"{protocol} needs {' and '.join(missing)}"
        elif self.sasl_username or self.sasl_password:
            return f"{env}SASL_USERNAME/SASL_PASSWORD are set but {protocol} does not use SASL (SASL_SSL?)"
        if not self.uses_tls():
            given = [f"{env}{n.upper()}" for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
            if given:
                return f"{', '.join(given)} set but {protocol} does not use TLS (SSL or SASL_SSL?)"
        if self.ssl_keyfile and not self.ssl_certfile:
            return f"{env}SSL_KEYFILE is set without {env}SSL_CERTFILE (the client certificate it belongs to)"
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                return f"{env}{name.upper()}: no such file: {path}"
        return None

    def broker_url(self) -> str:
        """faust's broker URL form: ``kafka://host:port;host:port``."""
        return ";".join(f"kafka://{h.strip()}" for h in self.bootstrap.split(",") if h.strip())
