"""Which sentiment model a mode serves: ``module:callable`` specs, the configured transformers model by default."""

from __future__ import annotations

import importlib
from typing import Any

from adapters.model.config import ModelSettings
from engine.errors import InvalidInput

DEFAULT_MODEL = "adapters.model.classifier:load_sentiment_model"


def load_model(spec: str, model_settings: ModelSettings | None = None) -> Any:
    """``module:callable`` -> the sentiment model it returns (a class or a factory).

    The default factory gets ``model_settings`` (``SIGSTREAM_MODEL__*``); other specs are called bare.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInput(f"--model must look like module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise InvalidInput(f"cannot load model {spec!r}: {exc}") from None
    if spec == DEFAULT_MODEL and model_settings is not None:
        return factory(model_settings)
    return factory()
