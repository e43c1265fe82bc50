"""Registry of fine-tuning methods: name -> its config class, its peft config builder, how the base is loaded.

Adding a method is adding an entry (and, for a new kind of tuner, a :class:`~sigstream.modes.train.config.TunerConfig`
subclass), as peft registers its tuners with their configs; nothing branches on names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sigstream.modes.train.config import LoraConfig, PrefixConfig, TrainConfig, TunerConfig

C = TypeVar("C", bound=TunerConfig)


@dataclass(frozen=True, slots=True)
class Method(Generic[C]):
    """How one fine-tuning method is configured and builds its model.

    Attributes:
        name: registry key, the ``--method`` value.
        config: the method's own settings, ``TrainConfig.tuner`` (LoraConfig, PrefixConfig).
        build: (its config, the whole run) -> peft config.
        quantize: how the base is loaded: ``none`` or ``4bit`` (NF4, the QLoRA way).
        default_lr: peak learning rate when none is given.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    config: type[C]
    build: Callable[[C, TrainConfig], Any]
    quantize: str
    default_lr: float
    summary: str

    def peft_config(self, cfg: TrainConfig) -> Any:
        """The peft config of run ``cfg``, whose tuner must be this method's config."""
        if not isinstance(cfg.tuner, self.config):
            raise TypeError(f"method {self.name} takes a {self.config.__name__}, not a {type(cfg.tuner).__name__}")
        return self.build(cfg.tuner, cfg)


def _lora(lora: LoraConfig, cfg: TrainConfig) -> Any:
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


def _prefix(prefix: PrefixConfig, cfg: TrainConfig) -> Any:
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
        Method("lora", LoraConfig, _lora, "none", 5e-4, "LoRA on an fp32/bf16 base (LoraConfig, SEQ_CLS)."),
        Method("qlora", LoraConfig, _lora, "4bit", 5e-4, "LoRA on a 4-bit NF4 base, double quantization."),
        Method(
            "prefix", PrefixConfig, _prefix, "none", 1e-2,
            "Prefix tuning (PrefixTuningConfig), optional projection MLP.",
        ),
    )
}


def get_method(name: str) -> Method[Any]:
    """Look a method up; unknown names are bad input."""
    from engine.errors import InvalidInput

    try:
        return METHODS[name]
    except KeyError:
        raise InvalidInput(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
