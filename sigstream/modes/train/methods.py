"""Registry of fine-tuning methods: name -> its config class, its peft config builder, how the base is loaded.

Each method's config class is defined here, beside its builder, as peft keeps each tuner's config with the tuner.
Adding a method is adding an entry (and, for a new kind of tuner, a :class:`TunerConfig` subclass); nothing branches
on names. :mod:`sigstream.modes.train.config` reads this registry; this module imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class TunerConfig(BaseModel):
    """The settings of one fine-tuning method (peft's PeftConfig per tuner); each method subclasses it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class LoraConfig(TunerConfig):
    """LoRA, for ``lora`` and ``qlora`` (peft's LoraConfig)."""

    # Defaults are the shipped default adapter's recipe (adapters/model/default_adapter/training_config.json).
    rank: int = Field(16, ge=1, description="LoRA rank r.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"], description="LoRA targets; ['all-linear'] for every Linear."
    )


class FullConfig(TunerConfig):
    """Full fine-tuning, for ``full``: every weight trains and the whole model is saved (no peft tuner)."""


class PrefixConfig(TunerConfig):
    """Prefix tuning, for ``prefix`` (peft's PrefixTuningConfig)."""

    prefix_tokens: int = Field(20, ge=1, description="Prefix tuning: virtual tokens per layer.")
    prefix_projection: bool = Field(False, description="Prefix tuning: reparameterise through an MLP.")


class TunedRun(Protocol):
    """What a builder reads of a run besides its tuner (a :class:`~sigstream.modes.train.config.TrainConfig`)."""

    @property
    def tuner(self) -> TunerConfig: ...

    @property
    def extra_trainable(self) -> Sequence[str]: ...


C = TypeVar("C", bound=TunerConfig)


@dataclass(frozen=True, slots=True)
class Method(Generic[C]):
    """How one fine-tuning method is configured and builds its model.

    Attributes:
        name: registry key, the ``--method`` value.
        config: the method's own settings, ``TrainConfig.tuner`` (LoraConfig, PrefixConfig).
        build: (its config, the whole run) -> peft config; None trains the model itself (``full``).
        quantize: how the base is loaded: ``none`` or ``4bit`` (NF4, the QLoRA way).
        default_lr: peak learning rate when none is given.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    config: type[C]
    build: Callable[[C, TunedRun], Any]
    quantize: str
    default_lr: float
    summary: str

    def peft_config(self, cfg: TunedRun) -> Any:
        """The peft config of run ``cfg``, whose tuner must be this method's config."""
        if not isinstance(cfg.tuner, self.config):
            raise TypeError(f"method {self.name} takes a {self.config.__name__}, not a {type(cfg.tuner).__name__}")
        return self.build(cfg.tuner, cfg)


def _lora(lora: LoraConfig, cfg: TunedRun) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    targets: str | list[str] = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    return PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        # peft adds the classification head (classifier/score) to modules_to_save for SEQ_CLS by itself.
        modules_to_save=list(cfg.extra_trainable) or None,
    )


def _full(_full: FullConfig, _cfg: TunedRun) -> None:
    return None  # no tuner: the trainer trains and saves every weight


def _prefix(prefix: PrefixConfig, cfg: TunedRun) -> Any:
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=prefix.prefix_tokens,
        prefix_projection=prefix.prefix_projection,
        modules_to_save=list(cfg.extra_trainable) or None,
    )


METHODS: dict[str, Method[Any]] = {
    m.name: m
    for m in (
        # 1.5e-3: the shipped default adapter's rate (rank 16, all-linear); 5e-4 under-trains it in 3 epochs.
        Method("lora", LoraConfig, _lora, "none", 1.5e-3, "LoRA on an fp32/bf16 base (LoraConfig, SEQ_CLS)."),
        Method("qlora", LoraConfig, _lora, "4bit", 5e-4, "LoRA on a 4-bit NF4 base, double quantization."),
        Method(
            "prefix", PrefixConfig, _prefix, "none", 1e-2,
            "Prefix tuning (PrefixTuningConfig), optional projection MLP.",
        ),
        # 3e-5: the usual full fine-tuning rate for a BERT-sized encoder (the teacher's probe in docs/model.md).
        Method("full", FullConfig, _full, "none", 3e-5, "Full fine-tuning, every weight (the teacher)."),
    )
}


def get_method(name: str) -> Method[Any]:
    """Look a method up; unknown names are bad input."""
    from engine.errors import InvalidInput

    try:
        return METHODS[name]
    except KeyError:
        raise InvalidInput(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
