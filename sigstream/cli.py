"""The ``sigstream`` console script.

Conventions: ``--help`` on every command (with an example), a progress bar on long runs, and exit code 2 with a
one-line reason on bad input (:class:`engine.errors.InvalidInput`) and on a bad flag (click's usage errors);
``--config FILE`` on every command. Output streams: stdout carries what a command produces (signals, tables,
JSON), stderr the diagnostics (progress, warnings, logs, errors). Heavy libraries load inside commands only.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from typer._click import ClickException, Command, Context, Parameter
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from engine.errors import FatalError, InvalidInput
from sigstream import __version__
from sigstream.logs import configure_logging
from sigstream.settings import shown_input, use_config_file

# Commands are registered from their own modules so each stays small and owned in one place.
COMMAND_MODULES = ("replay", "record", "bench", "train", "evaluate", "run", "worker", "backtest", "testserver",
                   "config", "direction", "dashboard")

app = typer.Typer(
    name="sigstream",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sigstream {__version__}")
        raise typer.Exit


def _config_option(ctx: Context, _param: Parameter, value: Path | None) -> None:
    if value is not None and not ctx.resilient_parsing:
        use_config_file(value)


def _log_format_option(ctx: Context, _param: Parameter, value: str | None) -> None:
    if value is not None and not ctx.resilient_parsing:
        configure_logging(log_format=value)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    log_format: str | None = typer.Option(
        None, "--log-format", help="Log lines on stderr: text (the default) or json (one JSON object per line).",
        callback=_log_format_option, expose_value=False, metavar="text|json"),
    config: Path | None = typer.Option(  # noqa: B008 - typer declares options as defaults
        None, "--config", help="TOML settings file (also SIGSTREAM_CONFIG); flags > environment > file > defaults.",
        callback=_config_option, is_eager=True, expose_value=False),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_version,
                                 is_eager=True, expose_value=False),
) -> None:
    """Streaming market-signal engine: Bybit ticks + news sentiment -> BUY/HOLD/SELL signals.

    Runs in-process by default; --kafka/--redis switch to the real services.

    Example:

    \b
      sigstream replay BTCUSDT_5m.csv --signals-out signals.jsonl
      sigstream --config sigstream.toml config show
    """
    configure_logging(level=logging.DEBUG if verbose else logging.INFO)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"sigstream.commands.{_name}")
    except ModuleNotFoundError as _exc:
        # Only a command module that does not exist yet is skipped; a missing dependency inside one is not.
        if _exc.name != f"sigstream.commands.{_name}":
            raise
        continue
    _module.register(app)


# One example per command, shown under its --help (click keeps a paragraph that starts with \b as written).
EXAMPLES: dict[str, str] = {
    "replay": "sigstream replay BTCUSDT_5m.csv --news news.csv --signals-out signals.jsonl",
    "record convert": "sigstream record convert BTCUSDT_5m.csv btc.jsonl.gz",
    "record demo": "sigstream record demo demo.jsonl.gz --minutes 600",
    "run": "sigstream run --sources bybit,rss --symbols BTCUSDT,ETHUSDT \\\n    --feed https://example.com/rss",
    "worker": "sigstream worker --kafka 127.0.0.1:9092 --redis redis://127.0.0.1:6379/0",
    "bench": "sigstream bench --texts 968 --json",
    "train": "sigstream train --method lora --data fpb:50:train --out runs/lora",
    "eval": "sigstream eval --data fpb:50:test --json",
    "backtest": "sigstream backtest --prices BTCUSDT_1d.csv --news cryptonews.csv \\\n"
                "    --symbol BTCUSDT --report out/bt",
    "testserver bybit": "sigstream testserver bybit --port 8765 --klines BTCUSDT_1m.csv --symbol BTCUSDT "
                        "--interval 1m",
    "testserver rss": "sigstream testserver rss --port 8766 --news cryptonews.csv",
    "config show": "sigstream --config sigstream.toml config show --format toml",
}


def build_command() -> Command:
    """The command tree of :data:`app` as the console script runs it: every command takes ``--config FILE``, and
    help is plain text (it wraps at the terminal's width instead of cutting flag names) with an example.

    typer 0.29 ships its own click (``typer._click``); the tree is walked through its public attributes only.
    """
    root = typer.main.get_command(app)
    # The root's own --config and --log-format (built by typer from _root's signature) are shared with every command:
    # parameters keep no state, and their callbacks act on a value given at either place.
    shared = [p for p in root.params if p.name in ("config", "log_format")]

    def visit(command: Any, path: str) -> None:
        command.rich_markup_mode = None  # typer's commands print rich boxes unless this is None
        if path:
            command.params.extend(p for p in shared if all(q.name != p.name for q in command.params))
        example = EXAMPLES.get(path)
        if example and "Example:" not in (command.help or ""):
            command.epilog = "Example:\n\n\b\n" + "\n".join(f"  {line}" for line in example.splitlines())
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, f"{path} {name}".strip())

    visit(root, "")
    return root


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: maps sigstream's error hierarchy to exit codes and one-line reasons."""
    try:
        code = build_command().main(args=argv, prog_name="sigstream", standalone_mode=False)
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        raise SystemExit(2) from None
    except UsageError as exc:
        # A bad flag or value: one line, like every other bad input (not a box, not the usage text).
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        typer.echo(f"error: {_one_line(exc.format_message())}{where}", err=True)
        raise SystemExit(2) from None
    except ClickException as exc:
        typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    except InvalidInput as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise SystemExit(2) from None
    except ValidationError as exc:
        # Settings from the environment: name the variable, not a traceback.
        first = exc.errors()[0]
        where = "__".join(str(p).upper() for p in first["loc"])
        typer.echo(f"error: SIGSTREAM_{where}: {first['msg']}{shown_input(first)}", err=True)
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
