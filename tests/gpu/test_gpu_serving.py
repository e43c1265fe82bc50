"""The GPU serving path on CUDA (adapters/model/gpu_serving.py): bf16 with SDPA, batch invariance with fixed shapes
per bucket, the 4-bit NF4 base, merged LoRA, CUDA graphs, the device's micro-batcher defaults, and the bench and
training-memory code at small sizes. Skipped without CUDA (tests/gpu/conftest.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from adapters.model import ModelSettings, TransformersSentimentModel
from adapters.model.gpu_serving import GpuSentimentModel
from tests.unit.test_batch_invariance import HEADLINES

BF16 = ModelSettings(device="cuda", quantize="none", dtype="bfloat16")


def _labels(probs: list[tuple[float, float, float]]) -> list[int]:
    return [max(range(3), key=p.__getitem__) for p in probs]


@pytest.fixture(scope="module")
def bf16() -> GpuSentimentModel:
    model = TransformersSentimentModel.optimized(BF16)
    assert isinstance(model, GpuSentimentModel)
    return model


def test_cuda_serving_is_the_gpu_path_in_bf16_with_sdpa(bf16: GpuSentimentModel) -> None:
    import torch

    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(bf16.model.parameters()).device.type == "cuda"
    assert bf16.attention == "sdpa" and bf16._mask_4d
    cpu = TransformersSentimentModel.optimized(ModelSettings(device="cpu", quantize="none", dtype="float32"))
    texts = list(HEADLINES)
    gpu_probs, cpu_probs = bf16.predict_proba(texts), cpu.predict_proba(texts)
    agree = sum(a == b for a, b in zip(_labels(gpu_probs), _labels(cpu_probs), strict=True)) / len(texts)
    assert agree >= 0.95
    assert max(abs(a - b) for g, c in zip(gpu_probs, cpu_probs, strict=True) for a, b in zip(g, c, strict=True)) < 0.1


def test_batch_invariance_holds_on_cuda(bf16: GpuSentimentModel) -> None:
    texts = list(HEADLINES[:64])
    together = bf16.predict_proba(texts)
    assert [bf16.predict_proba([t])[0] for t in texts] == together  # exact, as on CPU
    rng = random.Random(11)
    for count in (1, 5, 23, 60):
        mates = rng.sample(list(HEADLINES[64:]) * 4, count)
        batch = texts[:16] + mates
        rng.shuffle(batch)
        scored = dict(zip(batch, bf16.predict_proba(batch), strict=True))
        assert [scored[t] for t in texts[:16]] == together[:16], f"{count} batch mates changed a text"


def test_many_texts_keep_their_order_and_scores(bf16: GpuSentimentModel) -> None:
    texts = [f"{h} (#{i})" for i in range(40) for h in HEADLINES]  # several full forwards per bucket
    probs = bf16.predict_proba(texts)
    assert len(probs) == len(texts)
    sample = random.Random(5).sample(range(len(texts)), 30)
    assert [bf16.predict_proba([texts[i]])[0] for i in sample] == [probs[i] for i in sample]


def test_4bit_nf4_base_serves_on_cuda_close_to_bf16(bf16: GpuSentimentModel) -> None:
    import bitsandbytes as bnb

    nf4 = TransformersSentimentModel.optimized(BF16.model_copy(update={"quantize": "4bit"}))
    assert isinstance(nf4, GpuSentimentModel)
    layers = [m for m in nf4.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and layers[0].weight.quant_state.nested  # double quantization
    texts = list(HEADLINES)
    probs = nf4.predict_proba(texts)
    assert all(abs(sum(p) - 1) < 1e-3 for p in probs)
    agree = sum(a == b for a, b in zip(_labels(probs), _labels(bf16.predict_proba(texts)), strict=True)) / len(texts)
    assert agree >= 0.8


def test_merged_lora_serves_what_the_unmerged_adapter_does(bf16: GpuSentimentModel) -> None:
    unmerged = TransformersSentimentModel.optimized(BF16.model_copy(update={"merge_adapter": False}))
    texts = list(HEADLINES)
    merged_probs, unmerged_probs = bf16.predict_proba(texts), unmerged.predict_proba(texts)
    diff = max(abs(a - b) for m, u in zip(merged_probs, unmerged_probs, strict=True) for a, b in zip(m, u, strict=True))
    assert diff < 0.05


def test_cuda_graphs_replay_the_eager_scores(bf16: GpuSentimentModel) -> None:
    graphs = GpuSentimentModel.from_loaded(bf16._loaded, BF16.model_copy(update={"gpu_cuda_graphs": True}))
    texts = list(HEADLINES)
    eager, replayed = bf16.predict_proba(texts), graphs.predict_proba(texts)
    assert graphs._graphs and all(g is not None for g in graphs._graphs.values()), "a capture failed (see the log)"
    assert graphs.predict_proba(texts) == replayed  # replays are deterministic
    assert _labels(replayed) == _labels(eager)
    assert max(abs(a - b) for e, r in zip(eager, replayed, strict=True) for a, b in zip(e, r, strict=True)) < 1e-2


def test_the_micro_batcher_gets_the_cuda_defaults(bf16: GpuSentimentModel) -> None:
    from adapters.model.gpu_serving import BATCHER_DEFAULTS, batcher_settings_for
    from engine.config import BatcherSettings

    settings = batcher_settings_for(bf16, BatcherSettings())
    assert settings.max_batch == BATCHER_DEFAULTS["cuda"]["max_batch"]
    assert settings.max_wait_ms == BATCHER_DEFAULTS["cuda"]["max_wait_ms"]


def test_the_gpu_bench_runs_every_path_on_cuda(tmp_path: Path) -> None:
    from sigstream.modes.bench import GpuBenchSizes, bench_gpu_serving

    sizes = GpuBenchSizes(texts=256, loop_texts=16, pipeline_texts=64, latency_rounds=5, repeats=1, encoder="tiny")
    result = bench_gpu_serving(ModelSettings(), device="cuda", sizes=sizes, data=None, work_dir=tmp_path)
    rows = result["serving"]
    assert not [r for r in rows if "error" in r], rows
    assert any("CUDA graphs" in r["path"] for r in rows)
    assert all(r["peak_mb"] > 0 and r["texts_per_s"] > 0 for r in rows)


def test_the_training_memory_table_runs_on_cuda(tmp_path: Path) -> None:
    from sigstream.modes.train.memory import MemorySizes, training_memory_table

    table = training_memory_table(
        device="cuda", sizes=MemorySizes(batch_size=8, seq_len=32, steps=2, warmup=1, encoder="tiny"), work_dir=tmp_path
    )
    rows = table["training_memory"]
    assert not [r for r in rows if "error" in r], rows
    assert all(r["peak_mb"] >= r["weights_mb"] > 0 for r in rows)
    peak = {(r["encoder"], r["method"]): r["peak_mb"] for r in rows}
    assert peak[("MiniLM-L6", "qlora")] < peak[("MiniLM-L6", "lora")]
