"""`sigstream eval --json`: exactly the contract's keys on stdout, and bad rows reported, not dropped silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.data import REPO_ROOT

CONTRACT_KEYS = {"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "labels", "texts_per_s"}


def test_eval_json_has_exactly_the_contract_keys_and_bad_rows_go_to_stderr(tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    data.write_text(
        "text,label\nshares soared after record profit,positive\nprofit warning sends stock lower,negative\n"
        "the company held its annual meeting,neutral\n,neutral\nodd row,maybe\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "eval", "--data", str(data), "--json"],
        cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report) == CONTRACT_KEYS
    assert report["n"] == 3 and report["labels"] == ["bearish", "neutral", "bullish"]
    assert set(report["per_class"]) == set(report["labels"])
    assert all(set(m) == {"precision", "recall", "f1", "support"} for m in report["per_class"].values())
    assert sum(map(sum, report["confusion"])) == 3
    assert "2 bad rows not scored" in proc.stderr
    assert "empty text" in proc.stderr and "unknown label 'maybe'" in proc.stderr
