"""Typed configuration of one fine-tuning run; saved next to the adapter as training_config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from adapters.model.config import bundled_base_path


class TrainConfig(BaseModel):
    """Everything that determines a training run (with the seed, enough to reproduce it)."""

    method: str = Field("lora", description="A key of sigstream.training.methods.METHODS.")
    base: str = Field(default_factory=bundled_base_path, description="Hub id or local path of the base model.")
    data: list[str] = Field(default_factory=lambda: ["fpb:50:train"], description="Training data specs.")
    eval_data: list[str] = Field(default_factory=list, description="Held-out specs scored after training.")
    out: Path = Field(Path("adapter_out"), description="Output directory of the adapter and its reports.")
    epochs: int = Field(3, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (tests, smoke runs).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; None takes the method's default.")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(64, ge=8, le=512, description="Tokens per text; longer ones are truncated.")
    seed: int = Field(42, description="Seed of model init, shuffling and the validation split.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of training data used for validation.")
    max_examples: int | None = Field(None, ge=3, description="Stratified subsample of the training data.")
    # peft
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: int = Field(16, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"], description="LoRA targets; ['all-linear'] for every Linear."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="Sentence representation fed to the head: [CLS] (transformers' default) or masked mean."
    )
    extra_trainable: list[str] = Field(
        default_factory=list, description="Extra modules trained in full and saved with the adapter (e.g. pooler)."
    )
    prefix_tokens: int = Field(20, ge=1, description="Prefix tuning: virtual tokens per layer.")
    prefix_projection: bool = Field(False, description="Prefix tuning: reparameterise through an MLP.")
    # optimisation and loss
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Linear warmup share of all steps (5-10%).")
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    class_weights: bool = Field(True, description="Weight the loss by inverse class frequency.")
    focal_gamma: float | None = Field(None, ge=0, description="Use focal loss with this gamma instead of CE.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    patience: int = Field(2, ge=1, description="Early stopping: evaluations without a lower val loss.")
    evals_per_epoch: int = Field(1, ge=1, description="Validation passes per epoch.")
    resume: bool = Field(False, description="Continue from out/checkpoint when it exists.")
    keep_checkpoint: bool = Field(False, description="Keep out/checkpoint after a finished run (to extend it later).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads; 1 beats 2 on a CPU shared with other jobs (no spin-waits)."
    )
    gradient_checkpointing: bool = Field(False, description="QLoRA: recompute activations to save memory.")
    progress: bool = Field(True, description="Show a tqdm progress bar.")
