"""scripts/gpu-check.sh runs once on a scarce GPU, so its logic is tested here first: the same steps on CPU at toy
sizes (--dry-run), and the JSON each step must leave behind. And ``bench --device cuda`` without CUDA is bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVING_PATHS = {
    "chapter loop (1 text/forward, fp32)",
    "HF pipeline (batch 64, fp32)",
    "sigstream bf16 (merged LoRA)",
    "sigstream bf16 via micro-batcher (device defaults)",
    "sigstream 4-bit NF4 (double quant, bf16 compute; LoRA unmerged)",
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    return done, out


def test_the_dry_run_passes_every_step_and_leaves_its_files(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = dry_run
    assert done.returncode == 0, (out / "gpu-check.log").read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    assert [s["name"] for s in summary["steps"]] == ["environment", "tests-gpu", "bench", "training-memory"]
    assert all(s["rc"] == 0 and not s["timed_out"] for s in summary["steps"])
    assert {"environment.json", "tests-gpu.xml", "bench.json", "training-memory.json", "gpu-check.log"} <= set(
        summary["files"]
    )
    assert "=== bench: exit 0" in (out / "gpu-check.log").read_text()


def test_the_bench_json_has_every_serving_path_with_its_figures(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    bench = json.loads((dry_run[1] / "bench.json").read_text())
    assert bench["smoke"] is True and bench["device"] == "cpu"
    rows = bench["serving"]
    assert not [r for r in rows if "error" in r], rows
    assert {r["path"] for r in rows} == SERVING_PATHS  # CUDA graphs only run on CUDA
    for row in rows:
        assert row["texts_per_s"] > 0 and row["texts"] > 0
        assert 0 <= row["argmax_agreement_with_loop"] <= 1
        assert set(row) >= {"encoder", "weights_mb", "peak_mb", "wall_s"}
    sigstream = [r for r in rows if r["path"].startswith("sigstream") and "micro-batcher" not in r["path"]]
    assert all(r["latency_ms_p99"] >= r["latency_ms_p50"] > 0 for r in sigstream)


def test_the_training_memory_json_has_every_method_and_the_qlora_ratio(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    table = json.loads((dry_run[1] / "training-memory.json").read_text())
    rows = table["training_memory"]
    assert not [r for r in rows if "error" in r], rows
    assert [r["method"] for r in rows] == ["lora", "lora-bf16", "qlora", "qlora+gc", "full"]
    assert len({(r["batch_size"], r["seq_len"]) for r in rows}) == 1  # the same batch for every method
    assert all(r["ms_per_step"] > 0 for r in rows)
    assert rows[-1]["trainable_params"] > rows[0]["trainable_params"]  # full fine-tuning trains everything
    assert set(table["qlora_peak_ratio"]) == {rows[0]["encoder"]}


def test_an_unknown_argument_is_refused_with_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--fast"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == "error: unknown argument --fast (see --help)"


def test_bench_device_cuda_without_cuda_exits_2_with_one_line() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run(
        [sys.executable, "-m", "sigstream.cli", "bench", "--device", "cuda"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: torch sees no CUDA device")
