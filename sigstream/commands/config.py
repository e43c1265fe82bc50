"""``sigstream config``: the effective settings (defaults < ``--config`` file < environment), secrets masked."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import typer

from engine.errors import InvalidInput
from sigstream.settings import Settings, config_file, load_settings

config_app = typer.Typer(help="Inspect the configuration sigstream would run with.", no_args_is_help=True)

MASK = "**********"  # pydantic's own rendering of a SecretStr


@config_app.command("show")
def show(
    output: str = typer.Option("toml", "--format", help="toml (loadable again with --config) or json."),
) -> None:
    """Print the effective settings: each field's default, overridden by the --config file, then the environment.

    Secrets (SecretStr fields: passwords, tokens) are printed masked. Unset optional fields are left out of the
    TOML (TOML has no null) and are null in the JSON. The output is a valid --config file.
    """
    if output not in ("toml", "json"):
        raise InvalidInput(f"--format must be toml or json, not {output!r}")
    settings = load_settings()
    data = settings_data(settings)
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    file = config_file()
    header = f"# sigstream settings: defaults < {file} < SIGSTREAM_* environment\n" if file else (
        "# sigstream settings: defaults < SIGSTREAM_* environment (no --config file)\n")
    typer.echo(header + to_toml(data), nl=False)


def settings_data(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON data; SecretStr values come out as ``**********`` (pydantic's JSON mode)."""
    return settings.model_dump(mode="json")


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for settings data: scalars and lists first, then one ``[table]`` per nested section."""
    lines: list[str] = []
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append(f"[{'.'.join(_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _table(value, (*path, key), lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        if any(v is None for v in value):
            raise InvalidInput("a list setting holds null, which TOML cannot write; use --format json")
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise InvalidInput(f"cannot write {value!r} as TOML; use --format json")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
