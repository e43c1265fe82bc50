"""The CUDA serving and training paths: bf16, device_map placement, and QLoRA's memory saving."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["Operating profit rose to EUR 13.1 mn", "Sales fell by 10 %", "The company is based in Helsinki"]


def test_bf16_serving_on_cuda_matches_fp32_cpu_labels() -> None:
    import torch

    from adapters.model import ModelSettings, TransformersSentimentModel

    gpu = TransformersSentimentModel.optimized(ModelSettings(device="cuda", quantize="none", dtype="auto"))
    cpu = TransformersSentimentModel.optimized(ModelSettings(device="cpu", quantize="none"))

    assert next(gpu.model.parameters()).dtype == torch.bfloat16
    assert next(gpu.model.parameters()).device.type == "cuda"
    g, c = gpu.predict_proba(TEXTS), cpu.predict_proba(TEXTS)
    assert [max(range(3), key=p.__getitem__) for p in g] == [max(range(3), key=p.__getitem__) for p in c]
    assert all(abs(a - b) < 0.05 for pg, pc in zip(g, c, strict=True) for a, b in zip(pg, pc, strict=True))


def test_4bit_serving_places_the_base_with_device_map_and_quantizes_linear_layers() -> None:
    import bitsandbytes as bnb

    from adapters.model import ModelSettings, TransformersSentimentModel

    model = TransformersSentimentModel.optimized(ModelSettings(device="cuda", quantize="4bit"))

    linear4 = [m for m in model.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4, "no 4-bit layers"
    assert all(p.device.type == "cuda" for p in model.model.parameters())
    probs = model.predict_proba(TEXTS)
    assert all(abs(sum(p) - 1) < 1e-3 for p in probs)


def _peak_training_memory(method: str, out: Path) -> float:
    import torch

    from sigstream.modes.train.config import TrainConfig
    from sigstream.modes.train.trainer import train

    data = out.parent / "tiny.csv"
    data.write_text(
        "text,label\n"
        + "".join(
            f"company {i} profit rose,positive\ncompany {i} sales fell,negative\ncompany {i} is in Oslo,neutral\n"
            for i in range(16)
        )
    )
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = train(
        TrainConfig(
            method=method,
            data=[str(data)],
            eval_data=[],  # the default scores fpb:50:test, which this memory check does not need
            out=out,
            epochs=1,
            batch_size=16,
            max_length=32,
            device="cuda",
            progress=False,
        )
    )
    return result.peak_memory_mb


def test_qlora_trains_on_cuda_with_less_peak_memory_than_lora(tmp_path: Path) -> None:
    lora = _peak_training_memory("lora", tmp_path / "lora")
    qlora = _peak_training_memory("qlora", tmp_path / "qlora")
    assert qlora < lora, f"QLoRA peak {qlora:.1f} MB, LoRA {lora:.1f} MB"
