"""`sigstream eval --json`: exactly the contract's keys on stdout, and bad rows reported, not dropped silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import REPO_ROOT

CONTRACT_KEYS = {"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "labels", "texts_per_s", "ece"}


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "eval", *args],
        cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_eval_json_has_exactly_the_contract_keys_and_bad_rows_go_to_stderr(tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    data.write_text(
        "text,label\nshares soared after record profit,positive\nprofit warning sends stock lower,negative\n"
        "the company held its annual meeting,neutral\n,neutral\nodd row,maybe\n"
    )
    plot = tmp_path / "reliability.png"
    proc = _eval("--data", str(data), "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report) == CONTRACT_KEYS
    assert report["n"] == 3 and report["labels"] == ["bearish", "neutral", "bullish"]
    assert set(report["per_class"]) == set(report["labels"])
    assert all(set(m) == {"precision", "recall", "f1", "support"} for m in report["per_class"].values())
    assert sum(map(sum, report["confusion"])) == 3
    assert "2 bad rows not scored" in proc.stderr
    assert "empty text" in proc.stderr and "unknown label 'maybe'" in proc.stderr
    assert 0.0 <= report["ece"] <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training data" not in proc.stderr  # none of these texts was trained on


def test_eval_warns_when_the_data_overlaps_the_adapters_own_training_data(tmp_path: Path) -> None:
    from adapters.datasets import load_spec
    from tests.support.data import shared_data_dir

    try:
        shared_data_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    trained = load_spec("fpb:50:train").examples[:2]  # the shipped adapter trained on fpb:50:train (and tfns)
    rows = [f'"{e.text.replace(chr(34), chr(34) * 2)}",{("negative", "neutral", "positive")[e.label]}' for e in trained]
    data = tmp_path / "overlap.csv"
    data.write_text("text,label\n" + "\n".join([*rows, "a sentence no dataset has ever held,neutral"]) + "\n")
    proc = _eval("--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: 2 of 3 texts (66.7%) are in the model's own training data (fpb:50:train+tfns)" in proc.stderr
