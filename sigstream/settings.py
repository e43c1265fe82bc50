"""The one settings root, from the environment: prefix ``SIGSTREAM_``, nested sections joined by ``__``.

Example: ``SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD=0.8``, ``SIGSTREAM_MODEL__QUANTIZE=none``,
``SIGSTREAM_KAFKA__BOOTSTRAP=127.0.0.1:9092``. Each section is defined beside the code it configures.

Precedence, highest first: a CLI flag, an environment variable, ``.env``, the TOML file of ``--config FILE`` (or
``SIGSTREAM_CONFIG``), the field's default. A variable or TOML key that names no setting is an error, not ignored.

:class:`Settings` and every section are frozen: a command loads them once and never changes them. Its CLI flags
are laid over them with :func:`with_overrides`, which returns a new root whose changed sections are validated
again, so a flag is checked exactly like the variable it overrides.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.bybit.config import BybitSettings
from adapters.ccxt.config import CcxtSettings
from adapters.files.config import FilesSettings
from adapters.kafka.config import KafkaSettings
from adapters.model.config import ModelSettings
from adapters.prometheus.config import MetricsSettings
from adapters.redis.config import RedisSettings
from adapters.rss.config import RssSettings
from adapters.web.config import DashboardSettings
from engine.config import EngineSettings
from engine.errors import InvalidInput
from engine.redaction import redact_url

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
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier wins: flags (laid over later by with_overrides) > environment > .env > the TOML file > defaults.
        file = config_file()
        toml = (TomlConfigSettingsSource(settings_cls, toml_file=file),) if file is not None else ()
        return init_settings, env_settings, dotenv_settings, *toml, file_secret_settings


ENV_PREFIX = "SIGSTREAM_"
CONFIG_ENV = "SIGSTREAM_CONFIG"
_config_path: Path | None = None


def use_config_file(path: Path | None) -> None:
    """``--config FILE``: the TOML file settings are read from (below the environment); checked now."""
    global _config_path  # one file per process, chosen by the CLI before any command loads settings
    if path is not None:
        _read_toml(path)
    _config_path = path


def config_file() -> Path | None:
    """The TOML file in use: ``--config``, else ``$SIGSTREAM_CONFIG``, else none."""
    if _config_path is not None:
        return _config_path
    configured = os.environ.get(CONFIG_ENV)
    return Path(configured) if configured else None


def load_settings() -> Settings:
    """Read settings once per command; errors name the offending variable, key or file (:class:`InvalidInput`)."""
    file = config_file()
    data = _read_toml(file) if file is not None else {}
    check_environment(os.environ)
    if Path(".env").is_file():  # read by pydantic-settings like the environment, so checked the same way
        from dotenv import dotenv_values

        try:
            check_environment({k: v or "" for k, v in dotenv_values(".env").items()})
        except InvalidInput as exc:
            raise InvalidInput(f".env: {exc.reason}") from None
    if file is not None:
        for key in _unknown_keys(Settings, data):
            close = _closest(key, _setting_paths(Settings))
            raise InvalidInput(f"{file}: {key!r} names no setting" + (f" (did you mean {close!r}?)" if close else ""))
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        variable = ENV_PREFIX + "__".join(loc).upper()
        in_file = _lookup(data, loc)
        where = f"{file}: {'.'.join(loc)}" if variable not in os.environ and in_file and file else variable
        raise InvalidInput(f"{where}: {first['msg']}{shown_input(first)}") from None


def check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    """A URL setting is parsed before anything connects or loads: :class:`InvalidInput` naming ``name`` if not."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port, raising ValueError when it is not a number in range
    except ValueError as exc:
        raise InvalidInput(f"{name} {url!r}: not a valid URL: {exc}") from None
    if parts.scheme not in schemes:
        raise InvalidInput(f"{name} {url!r}: the scheme must be {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname and parts.scheme != "unix":
        raise InvalidInput(f"{name} {url!r}: no host in the URL")


def check_bootstrap(name: str, bootstrap: str) -> None:
    """``host:port[,host:port...]`` (Kafka's bootstrap list), checked before anything connects."""
    for broker in bootstrap.split(","):
        host, _, port = broker.strip().removeprefix("kafka://").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(f"{name} {bootstrap!r}: each broker is host:port, not {broker.strip()!r}")


def check_environment(environ: Mapping[str, str]) -> None:
    """A ``SIGSTREAM_A__B`` variable must name a setting: a misspelt one would otherwise be ignored silently.

    Only names with ``__`` claim to be settings; single-word ones (``SIGSTREAM_DATA``, ``SIGSTREAM_CONFIG``, the
    deploy scripts' ``SIGSTREAM_KAFKA_PORT``) belong to other tools and are left alone.
    """
    paths = _setting_paths(Settings)
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if not _resolves(Settings, parts):
            close = _closest(".".join(parts), paths)
            hint = f" (did you mean {ENV_PREFIX}{close.replace('.', '__').upper()}?)" if close else ""
            raise InvalidInput(f"{name} names no setting{hint}; `sigstream config show` lists them")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InvalidInput(f"--config {path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--config {path}: not a readable TOML file: {exc}") from None


def _lookup(data: Mapping[str, Any], loc: list[str]) -> bool:
    here: Any = data
    for part in loc:
        if not isinstance(here, Mapping) or part not in here:
            return False
        here = here[part]
    return True


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model class inside ``annotation`` (``X | None``, ``Annotated[X, ...]``), and whether it is a mapping
    (any key below it is the mapping's own)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    if origin in (dict, Mapping) or annotation is dict:
        return None, True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            model, mapping = _model_of(arg)
            if model is not None or mapping:
                return model, mapping
    return None, False


def _field_named(model: type[BaseModel], part: str) -> Any:
    for name, info in model.model_fields.items():
        if part in (name.lower(), (info.alias or "").lower()):
            return info
    return None


def _resolves(model: type[BaseModel], parts: list[str]) -> bool:
    info = _field_named(model, parts[0])
    if info is None:
        return False
    if len(parts) == 1:
        return True
    inner, mapping = _model_of(info.annotation)
    if mapping:
        return True
    return inner is not None and _resolves(inner, parts[1:])


def _unknown_keys(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in data.items():
        info = _field_named(model, str(key).lower())
        if info is None:
            yield prefix + str(key)
            continue
        inner, _ = _model_of(info.annotation)
        if inner is not None and isinstance(value, Mapping):
            yield from _unknown_keys(inner, value, f"{prefix}{key}.")


def _setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, info in model.model_fields.items():
        inner, _ = _model_of(info.annotation)
        if inner is not None:
            paths += _setting_paths(inner, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def _closest(key: str, paths: list[str]) -> str | None:
    close = difflib.get_close_matches(key.lower(), paths, n=1, cutoff=0.75)
    return close[0] if close else None


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
        raise InvalidInput(f"{name}: {first['msg']}{shown_input(first)}") from None


_SECRET_WORDS = ("password", "secret", "token", "credential", "key")


def shown_input(error: Mapping[str, Any]) -> str:
    """`` (got VALUE)`` for a validation error's one-line message, or nothing where the value may be a secret:
    a secret-named field, or a whole section (a dict or list may hold one). URLs are shown with passwords masked."""
    value = error.get("input")
    field = str(error["loc"][-1]).lower() if error.get("loc") else ""
    if isinstance(value, Mapping | list | tuple) or any(word in field for word in _SECRET_WORDS):
        return ""
    return f" (got {redact_url(value)!r})" if isinstance(value, str) else f" (got {value!r})"


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
    return InvalidInput(f"{where}: {first['msg']}{shown_input(first)}")
