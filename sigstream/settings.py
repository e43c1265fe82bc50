"""The one settings root, from the environment: prefix ``SIGSTREAM_``, nested sections joined by ``__``.

Example: ``SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD=0.8``, ``SIGSTREAM_MODEL__QUANTIZE=none``,
``SIGSTREAM_KAFKA__BOOTSTRAP=127.0.0.1:9092``. Each section is defined beside the code it configures.

:class:`Settings` and every section are frozen: a command loads them once and never changes them. Its CLI flags
are laid over them with :func:`with_overrides`, which returns a new root whose changed sections are validated
again, so a flag is checked exactly like the variable it overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    """Everything sigstream reads from the environment (or a ``.env`` file); frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix="SIGSTREAM_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
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


@dataclass(frozen=True, slots=True)
class Flag:
    """One CLI flag laid over the settings.

    Attributes:
        name: the flag as typed (``--kafka``), for error messages.
        value: its value; None means the flag was not given, and the settings keep theirs.
        paths: the settings it sets, dotted from the root (``kafka.bootstrap``); one flag may set several.
    """

    name: str
    value: object
    paths: tuple[str, ...]


def flag(name: str, value: object, *paths: str) -> Flag:
    """``flag("--interval", interval, "bybit.interval", "engine.interval")``: see :class:`Flag`."""
    if not paths:
        raise ValueError(f"{name}: a flag sets at least one setting")
    return Flag(name, value, paths)


def with_overrides(settings: M, *flags: Flag) -> M:
    """``settings`` with the given flags laid over it (later flags win), as a new object.

    Each section a flag changes is dumped, updated and validated again as a whole (a ``model_copy`` alone
    validates nothing), so a bad value is :class:`InvalidInput` naming its flag, exit status 2.
    """
    sections: dict[str, dict[tuple[str, ...], Flag]] = {}
    for f in flags:
        for path in f.paths:
            _check_path(type(settings), path)
            section, *rest = path.split(".")
            if not rest:
                raise ValueError(f"{f.name}: {path!r} is a whole section; name the setting inside it")
            if f.value is not None:
                sections.setdefault(section, {})[tuple(rest)] = f
    update: dict[str, BaseModel] = {}
    for section, values in sections.items():
        current = getattr(settings, section)
        data = current.model_dump()
        for inner, f in values.items():
            _set(data, inner, f.value)
        try:
            update[section] = type(current).model_validate(data)
        except ValidationError as exc:
            raise _named(exc, section, values) from None
    return settings.model_copy(update=update) if update else settings


def validated(model: type[M], **values: Any) -> M:
    """Build a model from CLI values whose names are their flags; a bad value is :class:`InvalidInput` naming it."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        raise InvalidInput(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


def _check_path(model: type[BaseModel], path: str) -> None:
    """A flag's setting must exist: a typo would otherwise be dropped silently by ``extra="ignore"``."""
    here: Any = model
    for part in path.split("."):
        field = here.model_fields.get(part) if isinstance(here, type) and issubclass(here, BaseModel) else None
        if field is None:
            raise ValueError(f"no setting {path!r}")
        here = field.annotation


def _set(data: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _named(exc: ValidationError, section: str, values: Mapping[tuple[str, ...], Flag]) -> InvalidInput:
    """The first error, named by the flag that set the failing setting (or by all of the section's flags)."""
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    owners = [(rest, f) for rest, f in values.items() if loc[: len(rest)] == rest]
    if owners:
        rest, f = max(owners, key=lambda owner: len(owner[0]))
        field = rest[-1].replace("_", "-")
        where = f.name if f.name == f"--{field}" else f"{f.name} (as {'.'.join((section, *rest[:-1]))} --{field})"
    else:  # a check across fields: every flag of the section took part
        where = ", ".join(dict.fromkeys(f.name for f in values.values()))
    return InvalidInput(f"{where}: {first['msg']} (got {first.get('input')!r})")
