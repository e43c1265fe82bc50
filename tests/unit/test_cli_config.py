"""Configuration as users expect it: ``--config FILE`` (TOML) on every command with flag > environment > file >
default, ``sigstream config show`` with secrets masked, ``--version`` and ``--log-format json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import InvalidInput
from engine.events import Interval
from sigstream import __version__
from sigstream.commands.config import to_toml
from sigstream.commands.run import run_settings
from sigstream.settings import check_environment, load_settings, use_config_file
from tests.support.data import REPO_ROOT

CONFIG = """\
[engine.aggregator]
threshold = 0.6
half_life_ms = 3600000

[bybit]
symbols = ["ETHUSDT", "SOLUSDT"]
interval = "5m"
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    # Only this test's variables: the suite's own SIGSTREAM_* settings would outrank the file under test.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGSTREAM_") or k == "SIGSTREAM_DATA"}
    return subprocess.run(
        [sys.executable, "-m", "sigstream.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )  # fmt: skip


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sigstream.toml"
    path.write_text(CONFIG)
    yield path
    use_config_file(None)


def test_precedence_is_flag_over_environment_over_file_over_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("SIGSTREAM_") and "__" in k]:
        monkeypatch.delenv(name)
    use_config_file(config_file)
    monkeypatch.setenv("SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD", "0.8")
    monkeypatch.setenv("SIGSTREAM_BYBIT__SYMBOLS", "XRPUSDT")
    settings = run_settings(load_settings(), ["bybit"], symbols="BTCUSDT")
    assert settings.bybit.symbols == ("BTCUSDT",)  # flag > environment
    assert settings.engine.aggregator.threshold == 0.8  # environment > file
    assert settings.engine.aggregator.half_life_ms == 3_600_000  # file > default
    assert settings.bybit.interval == Interval.M5  # file > default, and the run's flags carry it on
    assert settings.engine.aggregator.window_ms == 86_400_000  # default
    use_config_file(None)
    assert load_settings().engine.aggregator.half_life_ms != 3_600_000  # no file, no file values


def test_config_show_prints_the_effective_settings_on_every_command_position(config_file: Path) -> None:
    before = cli("config", "show", "--config", str(config_file), "--format", "json",
                 env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.8"})
    after = cli("--config", str(config_file), "config", "show", "--format", "json",
                env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.8"})
    by_variable = cli("config", "show", "--format", "json",
                      env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.8", "SIGSTREAM_CONFIG": str(config_file)})
    assert before.returncode == 0, before.stderr
    assert before.stdout == after.stdout == by_variable.stdout
    shown = json.loads(before.stdout)
    assert shown["engine"]["aggregator"]["threshold"] == 0.8
    assert shown["engine"]["aggregator"]["half_life_ms"] == 3_600_000
    assert shown["bybit"]["symbols"] == ["ETHUSDT", "SOLUSDT"]


def test_config_show_toml_is_a_config_file_that_gives_the_same_settings(tmp_path: Path) -> None:
    shown = cli("config", "show", env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.75"})
    assert shown.returncode == 0, shown.stderr
    saved = tmp_path / "saved.toml"
    saved.write_text(shown.stdout)
    tomllib.loads(shown.stdout)  # valid TOML
    from_file = cli("config", "show", "--format", "json", "--config", str(saved))
    from_env = cli("config", "show", "--format", "json", env={"SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.75"})
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == json.loads(from_env.stdout)
    assert json.loads(from_file.stdout)["engine"]["aggregator"]["threshold"] == 0.75


def test_config_show_masks_secrets() -> None:
    shown = cli("config", "show", "--format", "json", env={
        "SIGSTREAM_KAFKA__SASL_PASSWORD": "hunter2-kafka", "SIGSTREAM_REDIS__PASSWORD": "hunter2-redis",
        "SIGSTREAM_REDIS__URL": "redis://user:hunter2-url@127.0.0.1:6379/0"})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    data = json.loads(shown.stdout)
    assert data["kafka"]["sasl_password"] == "**********"
    assert data["redis"]["password"] == "**********"
    toml = cli("config", "show", env={"SIGSTREAM_KAFKA__SASL_PASSWORD": "hunter2-kafka"})
    assert "hunter2" not in toml.stdout and 'sasl_password = "**********"' in toml.stdout


def test_unknown_variables_are_refused_and_known_ones_and_tool_variables_pass() -> None:
    with pytest.raises(InvalidInput, match=r"SIGSTREAM_BYBIT__SYMBOL names no setting \(did you mean "
                                           r"SIGSTREAM_BYBIT__SYMBOLS\?\)"):
        check_environment({"SIGSTREAM_BYBIT__SYMBOL": "BTCUSDT"})
    with pytest.raises(InvalidInput, match="SIGSTREAM_NOPE__X names no setting"):
        check_environment({"SIGSTREAM_NOPE__X": "1"})
    check_environment({
        "SIGSTREAM_ENGINE__AGGREGATOR__THRESHOLD": "0.8", "SIGSTREAM_KAFKA__TOPICS__SIGNALS": "s",
        "SIGSTREAM_ENGINE__SYMBOLS__NAMES": "{}", "SIGSTREAM_DATA": "/x", "SIGSTREAM_KAFKA_PORT": "9092",
        "OTHER__THING": "1"})  # fmt: skip


def test_toml_writer_quotes_what_needs_quoting() -> None:
    text = to_toml({"a": {"plain": 1, "odd key": "x\"y", "flag": True, "items": [1.5, 2.0], "none": None,
                          "inner": {"z": "w"}}})  # fmt: skip
    assert tomllib.loads(text) == {"a": {"plain": 1, "odd key": "x\"y", "flag": True, "items": [1.5, 2.0],
                                         "inner": {"z": "w"}}}  # fmt: skip


def test_version_prints_the_package_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"sigstream {__version__}\n"


def test_log_format_json_writes_one_object_per_line() -> None:
    script = (
        "import logging, sys\n"
        "from sigstream.cli import main\n"
        "main(['--log-format', 'json', 'config', 'show'])\n"
        "logging.getLogger('sigstream.test').warning('hello %s', 'world')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    logging.getLogger('sigstream.test').exception('boom')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[0]["message"] == "hello world" and records[0]["level"] == "WARNING"
    assert records[0]["logger"] == "sigstream.test" and records[0]["ts"].endswith("Z")
    assert records[1]["message"] == "boom" and "ZeroDivisionError" in records[1]["exc"]
    bad = cli("--log-format", "xml", "config", "show")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1


def test_a_misspelt_variable_in_dot_env_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SIGSTREAM_BYBIT__SYMBOL=ETHUSDT\n")
    result = cli("config", "show", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: .env: SIGSTREAM_BYBIT__SYMBOL names no setting"), result.stderr
    (tmp_path / ".env").write_text("SIGSTREAM_BYBIT__SYMBOLS=ETHUSDT\n")
    shown = cli("config", "show", "--format", "json", cwd=tmp_path)
    assert json.loads(shown.stdout)["bybit"]["symbols"] == ["ETHUSDT"]
