"""Settings of the Redis feature cache (``SIGSTREAM_REDIS__...``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, field_validator

from engine.redaction import redact_url


class RedisSettings(BaseModel):
    """Whether and where features are cached, and how long they live."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(
        None,
        description="redis:// URL (database number in the path), or rediss:// for TLS, of the feature cache; "
        "unset: no Redis, features stay in process. --redis URL or SIGSTREAM_REDIS__URL turns the cache on, and "
        "nothing else does. Credentials belong in SIGSTREAM_REDIS__USERNAME / __PASSWORD; a password in the URL "
        "works too and is masked wherever the URL is printed.",
    )
    username: str | None = Field(
        None, description="ACL user (Redis 6+); unset: the default user (a requirepass password only)."
    )
    password: SecretStr | None = Field(
        None, description="Password of the ACL user, or requirepass; from the environment, never printed."
    )
    ssl_cafile: Path | None = Field(
        None, description="With rediss://: PEM file of the CA that signed the server certificate; unset: system CAs."
    )
    ssl_certfile: Path | None = Field(None, description="With rediss://: PEM client certificate, when Redis asks.")
    ssl_keyfile: Path | None = Field(None, description="With rediss://: PEM private key of ssl_certfile.")
    ssl_check_hostname: bool = Field(
        True, description="With rediss://: check that the certificate names the host connected to."
    )
    key_prefix: str = Field("sigstream", description="Prefix of every key, so deployments can share a Redis.")
    ttl_s: int = Field(7 * 86_400, ge=1, description="Keys of a symbol not updated for this long expire.")
    max_bars: int = Field(500, ge=1, description="Recent bars kept per symbol (enough to warm features).")
    warm_bars: int = Field(200, ge=1, description="Bars a cold worker reads per symbol to restore features.")
    flush_max_items: int = Field(256, ge=1, description="Pending writes that trigger a pipelined flush.")
    flush_interval_ms: int = Field(100, ge=1, description="Longest a write waits for its pipeline.")
    socket_timeout_s: float = Field(2.0, gt=0, description="Per-command socket timeout.")
    reconnect_initial_s: float = Field(0.2, gt=0, description="First reconnect delay cap (full jitter).")
    reconnect_max_s: float = Field(5.0, gt=0, description="Largest reconnect delay cap.")

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # SIGSTREAM_REDIS__URL= (empty) is no URL, as if unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_serializer("url", when_used="json")
    def _masked_url(self, url: str | None) -> str | None:
        # JSON is what gets shown (`sigstream config show`); the Python dump that flags are applied to keeps it.
        return None if url is None else redact_url(url)

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _absolute_file(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().resolve()

    def uses_tls(self) -> bool:
        return self.url is not None and urlsplit(self.url).scheme == "rediss"

    def security_problem(self) -> str | None:
        """What is inconsistent in the security settings, naming the variables (never a value); None: nothing.

        Checked when the client is built, not by a model validator: a validation error carries the section's
        input, password and URL included, and the CLI prints it.
        """
        env = "SIGSTREAM_REDIS__"
        given = [f"{env}{n.upper()}" for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if given and not self.uses_tls():
            return f"{', '.join(given)} set but the Redis URL is not rediss:// (TLS)"
        if self.ssl_keyfile and not self.ssl_certfile:
            return f"{env}SSL_KEYFILE is set without {env}SSL_CERTFILE"
        if self.username and not self.password and not (self.url and urlsplit(self.url).password):
            return f"{env}USERNAME is set without {env}PASSWORD (nor a password in the URL)"
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                return f"{env}{name.upper()}: no such file: {path}"
        return None
