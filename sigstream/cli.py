"""The ``sigstream`` console script.

Conventions: ``--help`` on every command, a progress bar on long runs, and exit code 2 with a
one-line reason on bad input (:class:`engine.errors.InvalidInput`).
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from engine.errors import FatalError, InvalidInput

# Commands are registered from their own modules so each stays small and owned in one place.
COMMAND_MODULES = ("replay", "record", "bench", "train", "evaluate", "run", "worker", "backtest", "testserver")

app = typer.Typer(
    name="sigstream",
    help=(
        "Streaming market-signal engine: Bybit ticks + news sentiment -> composite BUY/HOLD/SELL "
        "signals. Runs in-process by default; --kafka/--redis switch to the real services."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"sigstream.commands.{_name}")
    except ModuleNotFoundError as _exc:
        # Only a command module that does not exist yet is skipped; a missing dependency inside one is not.
        if _exc.name != f"sigstream.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """Entry point: maps sigstream's error hierarchy to exit codes and one-line reasons."""
    try:
        app()
    except InvalidInput as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise SystemExit(2) from None
    except ValidationError as exc:
        # Settings from the environment: name the variable, not a traceback.
        first = exc.errors()[0]
        where = "__".join(str(p).upper() for p in first["loc"])
        typer.echo(f"error: SIGSTREAM_{where}: {first['msg']} (got {first.get('input')!r})", err=True)
        raise SystemExit(2) from None
    except SettingsError as exc:
        # pydantic-settings could not decode a variable (a dict or list section given as plain text).
        typer.echo(f'error: {exc} (dict and list settings take JSON, e.g. \'{{"key": "value"}}\')', err=True)
        raise SystemExit(2) from None
    except FatalError as exc:
        typer.echo(f"fatal: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
