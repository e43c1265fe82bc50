"""``--help`` reads well at 80 columns: no line longer, no flag name cut, and an example under every command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from typer._click import Context

from sigstream.cli import build_command
from tests.support.data import REPO_ROOT


def _leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


COMMANDS = list(_leaves(build_command()))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_fits_80_columns_with_every_flag_whole_and_an_example(path: tuple[str, ...], command: Any) -> None:
    ctx = Context(command, info_name="sigstream " + " ".join(path), terminal_width=80, max_content_width=80)
    text = command.get_help(ctx)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
    assert "…" not in text
    for param in command.params:
        for name in getattr(param, "opts", []):
            if name.startswith("--"):
                assert name in text, f"{name} missing from the help of {' '.join(path)}"
    assert "Example:" in text, f"no example in the help of {' '.join(path)}"
    assert "--config" in text


def test_the_console_script_help_at_80_columns_is_plain_text() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "backtest", "--help"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, "COLUMNS": "80"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "╭" not in result.stdout and "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "--initial-capital" in result.stdout
