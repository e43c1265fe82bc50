"""Bad flags and bad settings end in exit status 2 and one line that names the problem, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import REPO_ROOT


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["eval", "--data", "{csv}", "--model", "/no/such/adapter"], {}, "model directory /no/such/adapter does not"),
        (["train", "--method", "lora", "--data", "{csv}", "--out", "{tmp}/x", "--epochs", "0"], {}, "--epochs:"),
        (["replay", "{csv}"], {"SIGSTREAM_ENGINE__SYMBOLS__NAMES": "pepe:PEPEUSDT"}, "error parsing value"),
        (["replay", "{csv}", "--speed", "2"], {}, "--speed only applies with --to-kafka"),
        (["replay", "{csv}", "--to-kafka", "127.0.0.1:1", "--signals-out", "{tmp}/s.jsonl"], {}, "do nothing with"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_2(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    csv = tmp_path / "tiny.csv"
    csv.write_text("text,label\nshares rose,bullish\n")
    argv = [a.format(csv=csv, tmp=tmp_path) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", *argv],
        cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
