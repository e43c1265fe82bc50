"""Training memory table (``sigstream bench --device cuda --training-memory``): peak GPU memory and time per
optimizer step of LoRA, 16-bit LoRA, QLoRA (also checkpointed) and full fine-tuning, same batch and length, on MiniLM
and on a BERT-base-sized encoder (random init: memory and speed need no trained weights).

Each row but one builds its model the way ``sigstream train`` does (``trainer.build_model``), so the figures are the
trainer's own; ``lora-bf16`` (the chapter's 16-bit LoRA, the baseline of QLoRA's ~4x claim) is built here. Peak
memory is ``torch.cuda.max_memory_allocated`` from before the model is loaded to after
the last step: weights, gradients, optimizer state and activations. On CPU (the smoke run) memory is not measured.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Row name -> what it is, for the table's notes.
METHODS: dict[str, str] = {
    "lora": "LoRA with the trainer's defaults (r=16 on every Linear), fp32 base (sigstream train --method lora)",
    "lora-bf16": "the same LoRA on a bf16 base (16-bit LoRA)",
    "qlora": "the same LoRA on an NF4 base, double quant, bf16 compute (sigstream train --method qlora)",
    # At 110M parameters activations, not weights, may dominate a batch of 32 x 128: this row shows that part.
    "qlora+gc": "QLoRA with gradient checkpointing (TrainConfig.gradient_checkpointing)",
    "full": "full fine-tuning, fp32, every weight trained (sigstream train --method full)",
}


@dataclass(frozen=True, slots=True)
class MemorySizes:
    """The shared batch: every row trains on the same ``batch_size`` x ``seq_len`` tokens."""

    batch_size: int = 32
    seq_len: int = 128
    steps: int = 10  # timed
    warmup: int = 2
    encoder: str = "base"
    minilm: bool = True  # the smoke run keeps to the tiny random encoder


SMOKE_MEMORY_SIZES = MemorySizes(batch_size=4, seq_len=16, steps=1, warmup=1, encoder="tiny", minilm=False)


def _build(method: str, base: str, device: str, batch: MemorySizes) -> Any:
    import torch

    from adapters.model import client
    from sigstream.modes.train.config import TrainConfig

    model: Any
    from sigstream.modes.train.methods import METHODS as TRAIN_METHODS
    from sigstream.modes.train.trainer import build_model

    if method in {"lora", "qlora", "qlora+gc", "full"}:
        cfg = TrainConfig(method=method.removesuffix("+gc"), base=base, device=device, batch_size=batch.batch_size,
                          max_length=batch.seq_len, gradient_checkpointing=method.endswith("+gc"),
                          progress=False)  # fmt: skip
        return build_model(cfg, device)[1]
    if method == "lora-bf16":
        from peft import get_peft_model

        cfg = TrainConfig(method="lora", base=base, device=device, progress=False)
        model = client.load_base(base, dtype=torch.bfloat16, quiet=True)[0]
        return get_peft_model(model, TRAIN_METHODS["lora"].peft_config(cfg)).to(device)
    raise ValueError(f"unknown row {method!r}; one of {', '.join(METHODS)}")


def _measure(method: str, base: str, device: str, sizes: MemorySizes) -> dict[str, Any]:
    import torch

    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = _build(method, base, device, sizes)
    weights_mb = round(torch.cuda.memory_allocated() / 2**20, 1) if cuda else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    # Real tokens in every position: the same work for every row, no padding to skip.
    input_ids = torch.randint(1000, vocab, (sizes.batch_size, sizes.seq_len), generator=generator).to(device)
    mask = torch.ones_like(input_ids)
    labels = torch.randint(0, 3, (sizes.batch_size,), generator=generator).to(device)
    model.train()

    def step() -> float:
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(sizes.warmup):
        step()
    sync()
    start = time.perf_counter()
    loss = 0.0
    for _ in range(sizes.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / sizes.steps
    row = {
        "trainable_params": sum(p.numel() for p in trainable),
        "weights_mb": weights_mb,
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "ms_per_step": round(seconds * 1000, 2),
        "last_loss": round(loss, 4),
    }
    return row  # the model and optimizer go with this frame, before the next row is measured


def training_memory_table(
    *,
    device: str,
    sizes: MemorySizes,
    work_dir: Path,
    minilm_base: str | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every row of :data:`METHODS` on MiniLM and on a random BERT-``sizes.encoder``; ratios of QLoRA's peak to
    both LoRA rows per encoder. A row that fails carries its error and the others still run."""
    from adapters.model.config import bundled_base_path
    from adapters.model.gpu_serving import save_random_encoder

    encoders = {"MiniLM-L6": minilm_base or bundled_base_path()} if sizes.minilm else {}
    random_base = save_random_encoder(work_dir / f"bert-{sizes.encoder}-random", size=sizes.encoder)
    encoders[f"BERT-{sizes.encoder} (random init)"] = str(random_base)
    rows: list[dict[str, Any]] = []
    for encoder, base in encoders.items():
        for method in METHODS:
            row: dict[str, Any] = {"encoder": encoder, "method": method, "batch_size": sizes.batch_size,
                                   "seq_len": sizes.seq_len}  # fmt: skip
            try:
                row.update(_measure(method, base, device, sizes))
            except Exception as exc:  # recorded in the table, and the other rows still run
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {"methods": METHODS, "training_memory": rows, "qlora_peak_ratio": peak_ratios(rows)}


def peak_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per encoder, each QLoRA row's peak memory over each LoRA row's (None where a figure is missing)."""
    out: dict[str, dict[str, float | None]] = {}
    for encoder in dict.fromkeys(r["encoder"] for r in rows):
        peak: dict[str, float] = {
            r["method"]: float(r["peak_mb"]) for r in rows if r["encoder"] == encoder and r.get("peak_mb")
        }
        out[encoder] = {
            f"{q}_vs_{other}": round(peak[q] / peak[other], 3) if q in peak and other in peak else None
            for q in ("qlora", "qlora+gc")
            for other in ("lora", "lora-bf16")
        }
    return out
