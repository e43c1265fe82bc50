"""Typed configuration of one fine-tuning run; saved next to the adapter as training_config.json.

A run is a :class:`TrainConfig` (what every method shares: data, optimisation, loss, ...) whose ``tuner`` holds the
method's own settings, one class per method as peft has one config per tuner: :class:`LoraConfig` (``lora`` and
``qlora``) and :class:`PrefixConfig` (``prefix``). ``sigstream.modes.train.methods.METHODS`` maps each method name to
its config class and its builder. A method's config rejects another method's fields.

training_config.json keeps the run as ``{"config": {..., "tuner": {...}}}``. Files written before the split held
every field flat in ``config``; :meth:`TrainConfig.load` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

from adapters.model.config import bundled_base_path
from sigstream.modes.train.methods import METHODS, LoraConfig, PrefixConfig, TunerConfig

__all__ = ["LoraConfig", "PrefixConfig", "TrainConfig", "TunerConfig"]


def _tuner_classes() -> dict[str, type[TunerConfig]]:
    return {name: method.config for name, method in METHODS.items()}


def foreign_fields(method: str, values: Mapping[str, object]) -> dict[str, list[str]]:
    """The fields of ``values`` that belong to other methods' configs than ``method``'s and differ from their
    defaults, each with the methods it belongs to. (A default is what a flag left alone gives; it is no request.)"""
    classes = _tuner_classes()
    own = classes[method].model_fields
    foreign: dict[str, list[str]] = {}
    for name, cls in classes.items():
        for field, info in cls.model_fields.items():
            if field in values and field not in own and values[field] != info.get_default(call_default_factory=True):
                foreign.setdefault(field, []).append(name)
    return foreign


def foreign_message(method: str, field: str, methods: list[str]) -> str:
    """One line: the flag of ``field`` does not apply to ``method``."""
    return f"--{field.replace('_', '-')} is a setting of --method {'/'.join(methods)}, not of --method {method}"


class TrainConfig(BaseModel):
    """Everything that determines a training run (with the seed, enough to reproduce it).

    The defaults are the recipe of the shipped default adapter (adapters/model/default_adapter), so a bare
    ``sigstream train --out DIR`` trains what ships; tests/unit/test_training.py holds them to it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field("lora", description="A key of sigstream.modes.train.methods.METHODS.")
    base: str = Field(default_factory=bundled_base_path, description="Hub id or local path of the base model.")
    data: list[str] = Field(default_factory=lambda: ["fpb:50:train", "tfns"], description="Training data specs.")
    eval_data: list[str] = Field(
        default_factory=lambda: ["fpb:50:test"], description="Held-out specs scored after training."
    )
    out: Path = Field(Path("adapter_out"), description="Output directory of the adapter and its reports.")
    epochs: int = Field(3, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (tests, smoke runs).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; None takes the method's default.")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(64, ge=8, le=512, description="Tokens per text; longer ones are truncated.")
    seed: int = Field(42, description="Seed of model init, shuffling and the validation split.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of training data used for validation.")
    max_examples: int | None = Field(None, ge=3, description="Stratified subsample of the training data.")
    # peft, every method
    tuner: SerializeAsAny[TunerConfig] = Field(
        default_factory=LoraConfig, description="The method's own settings: its config class in METHODS."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="Sentence representation fed to the head: [CLS] (transformers' default) or masked mean."
    )
    extra_trainable: list[str] = Field(
        default_factory=list, description="Extra modules trained in full and saved with the adapter (e.g. pooler)."
    )
    # optimisation and loss
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Linear warmup share of all steps (5-10%).")
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    class_weights: bool = Field(False, description="Weight the loss by inverse class frequency.")
    focal_gamma: float | None = Field(None, ge=0, description="Use focal loss with this gamma instead of CE.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    # distillation (trainer.distill_targets): soft labels of a teacher over the labelled and unlabelled texts
    distill_from: list[str] = Field(
        default_factory=list,
        description="Teachers to distil from (an adapter dir, a full model dir, or the word 'teacher'); several are "
        "an ensemble whose probabilities are averaged. Empty: no distillation.",
    )
    distill_base: str | None = Field(None, description="Base under a teacher adapter; default: the serving default.")
    distill_temperature: float = Field(2.0, gt=0, description="Softmax temperature of teacher and student in the KL.")
    distill_alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha weights the cross-entropy on true labels."
    )
    unlabelled: list[str] = Field(
        default_factory=list,
        description="Unlabelled in-domain specs for distillation: cryptonews, cryptonews-text, or labelled specs "
        "without their labels.",
    )
    distill_augment: int = Field(
        0,
        ge=0,
        le=20,
        description="Perturbed copies of each labelled training text added to the distillation transfer set, with "
        "only the teacher's soft label (word deletion and span sampling; Tang et al. 2019).",
    )
    autocast: Literal["none", "bf16"] = Field(
        "none", description="bf16 autocast of forward passes (fast on a CPU with AMX/AVX512-BF16, and on CUDA)."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N optimizer steps, so an early stop (Ctrl-C) keeps the work."
    )
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

    @model_validator(mode="before")
    @classmethod
    def _gather_tuner_fields(cls, data: Any) -> Any:
        """A method's fields given flat (``TrainConfig(method="prefix", prefix_tokens=8)``, or a training_config.json
        from before the split) go into ``tuner``; another method's field is an error unless it is its default."""
        if not isinstance(data, Mapping):
            return data
        classes = _tuner_classes()
        method = data.get("method", "lora")
        if not isinstance(method, str) or method not in classes:
            return data  # the method field names the problem
        data = dict(data)
        foreign = foreign_fields(method, data)
        if foreign:
            field, methods = next(iter(foreign.items()))
            raise ValueError(foreign_message(method, field, methods))
        tuner_fields = {field for c in classes.values() for field in c.model_fields}
        flat = {k: data.pop(k) for k in list(data) if k in tuner_fields}
        own = {k: v for k, v in flat.items() if k in classes[method].model_fields}
        tuner = data.get("tuner")
        if isinstance(tuner, Mapping) or tuner is None:
            data["tuner"] = {**(tuner or {}), **own}
        elif own:
            raise ValueError(f"{', '.join(own)} given both flat and in tuner")
        return data

    @field_validator("distill_from", mode="before")
    @classmethod
    def _teachers_as_list(cls, value: Any) -> Any:
        # training_config.json files written before ensembles hold one teacher as a string, or null.
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _augment_needs_a_teacher(self) -> TrainConfig:
        if self.distill_augment and not self.distill_from:
            raise ValueError("distill_augment adds texts with only a teacher's soft label: give distill_from too")
        return self

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        classes = _tuner_classes()
        if method not in classes:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(classes)}")
        return method

    @field_validator("tuner", mode="before")
    @classmethod
    def _tuner_of_the_method(cls, tuner: Any, info: ValidationInfo) -> Any:
        method = info.data.get("method")
        if method is None:
            return tuner  # the method is invalid; that error says so
        config = _tuner_classes()[method]
        if isinstance(tuner, Mapping):
            return config.model_validate(tuner)
        if not isinstance(tuner, config):
            raise ValueError(f"--method {method} takes a {config.__name__}, not a {type(tuner).__name__}")
        return tuner

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """The run recorded in a ``training_config.json`` (either shape; see the module docstring).

        In the flat shape every method's fields were saved whether used or not: the other methods' are dropped.
        """
        config = dict(json.loads(Path(path).read_text())["config"])
        if "tuner" not in config:
            classes = _tuner_classes()
            own = classes.get(config.get("method", "lora"), LoraConfig).model_fields
            unused = {f for c in classes.values() for f in c.model_fields if f not in own}
            config = {k: v for k, v in config.items() if k not in unused}
        return cls.model_validate(config)
