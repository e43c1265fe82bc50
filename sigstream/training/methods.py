"""Registry of fine-tuning methods: name -> peft config builder + how the base is loaded.

Adding a method is adding an entry, as peft registers its tuners; nothing branches on names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sigstream.training.config import TrainConfig


@dataclass(frozen=True, slots=True)
class Method:
    """How one fine-tuning method builds its model.

    Attributes:
        name: registry key, the ``--method`` value.
        peft_config: TrainConfig -> peft config.
        quantize: how the base is loaded: ``none`` or ``4bit`` (NF4, the QLoRA way).
        default_lr: peak learning rate when none is given.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    peft_config: Callable[[TrainConfig], Any]
    quantize: str
    default_lr: float
    summary: str


def _lora(cfg: TrainConfig) -> Any:
    from peft import LoraConfig, TaskType

    targets: str | list[str] = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        # peft adds the classification head (classifier/score) to modules_to_save for SEQ_CLS by itself.
        modules_to_save=list(cfg.extra_trainable) or None,
    )


def _prefix(cfg: TrainConfig) -> Any:
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=cfg.prefix_tokens,
        prefix_projection=cfg.prefix_projection,
        modules_to_save=list(cfg.extra_trainable) or None,
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lora", _lora, "none", 5e-4, "LoRA on an fp32/bf16 base (LoraConfig, SEQ_CLS)."),
        Method("qlora", _lora, "4bit", 5e-4, "LoRA on a 4-bit NF4 base, double quantization."),
        Method("prefix", _prefix, "none", 1e-2, "Prefix tuning (PrefixTuningConfig), optional projection MLP."),
    )
}


def get_method(name: str) -> Method:
    """Look a method up; unknown names are bad input."""
    from engine.errors import InvalidInput

    try:
        return METHODS[name]
    except KeyError:
        raise InvalidInput(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
