"""Root settings from the environment: prefix ``SIGSTREAM_``, nested sections joined by ``__``.

Example: ``SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD=0.8``, ``SIGSTREAM_MODEL__QUANTIZE=none``,
``SIGSTREAM_KAFKA__BOOTSTRAP=127.0.0.1:9092``. Each section is defined beside the code it configures.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.bybit.config import BybitSettings
from adapters.ccxt.config import CcxtSettings
from adapters.files.config import FilesSettings
from adapters.kafka.config import KafkaSettings
from adapters.model.config import ModelSettings
from adapters.prometheus.config import MetricsSettings
from adapters.redis.config import RedisSettings
from adapters.rss.config import RssSettings
from engine.config import EngineSettings
from engine.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


class Settings(BaseSettings):
    """Everything sigstream reads from the environment (or a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix="SIGSTREAM_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    engine: EngineSettings = Field(default_factory=EngineSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    bybit: BybitSettings = Field(default_factory=BybitSettings)
    rss: RssSettings = Field(default_factory=RssSettings)
    ccxt: CcxtSettings = Field(default_factory=CcxtSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)


def load_settings() -> Settings:
    """Read settings once per command; errors name the offending variable."""
    return Settings()


def validated(model: type[M], **values: Any) -> M:
    """Build a settings model from CLI values; a bad value is :class:`InvalidInput` naming the option."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        raise InvalidInput(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
