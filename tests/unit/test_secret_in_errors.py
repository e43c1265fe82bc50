"""A bad value next to a secret never prints the secret: the one-line error names the setting, not its value."""

from __future__ import annotations

import subprocess
import sys

from sigstream.settings import shown_input


def test_a_password_field_error_shows_no_value() -> None:
    assert shown_input({"loc": ("kafka", "sasl_password"), "input": "hunter2", "msg": "bad"}) == ""


def test_a_whole_section_error_shows_no_value() -> None:
    error = {"loc": ("redis",), "input": {"url": "redis://u:hunter2@h:6379/0", "password": "hunter2"}, "msg": "x"}
    assert shown_input(error) == ""


def test_a_url_value_is_shown_with_its_password_masked() -> None:
    shown = shown_input({"loc": ("redis", "url"), "input": "redis://u:hunter2@h:notaport/0", "msg": "bad"})
    assert "hunter2" not in shown and "redis://u:***@h:notaport/0" in shown


def test_an_ordinary_value_is_shown() -> None:
    assert shown_input({"loc": ("engine", "interval"), "input": "2m", "msg": "bad"}) == " (got '2m')"


def test_the_cli_names_a_bad_kafka_setting_without_printing_the_password_beside_it() -> None:
    env = {"SIGSTREAM_KAFKA__SASL_PASSWORD": "hunter2", "SIGSTREAM_KAFKA__SECURITY_PROTOCOL": "BOGUS",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(  # the console script's own error path, as a user meets it
        [sys.executable, "-m", "sigstream.cli", "config", "show"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: SIGSTREAM_KAFKA__SECURITY_PROTOCOL")
    assert "hunter2" not in proc.stdout + proc.stderr
