"""Which sentiment model a mode serves: ``module:callable`` specs, the configured transformers model by default."""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.model.config import ModelSettings
from engine.errors import InvalidInput
from sigstream.settings import Settings, flag, with_overrides

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


# ``pkg.module:callable``; anything else given to --model is a path or hub id of a model to serve.
_FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory_spec(spec: str) -> bool:
    """True for ``module:callable`` (a factory); False for a path or hub id (an adapter folder or a full model)."""
    return bool(_FACTORY_SPEC.match(spec))


def with_model_flag(settings: Settings, spec: str | None) -> tuple[Settings, str]:
    """``--model``, one meaning in replay, worker and eval: the sentiment model to serve.

    ``module:callable`` is a factory called to build it (e.g. ``tests.support.lexicon_model:LexiconSentimentModel``);
    anything else is a path or hub id: a peft adapter folder (it has ``adapter_config.json``; served on
    ``model.base``) or a full sequence-classification model (served alone). Returns the settings with the model
    laid over them and the factory spec to load. Checked here, before anything heavy loads.
    """
    if spec is None or spec == DEFAULT_MODEL:
        return settings, DEFAULT_MODEL
    if is_factory_spec(spec):
        module_name = spec.partition(":")[0]
        try:
            found = importlib.util.find_spec(module_name)
        except (ModuleNotFoundError, ValueError):
            found = None
        if found is None:
            raise InvalidInput(f"--model {spec}: no module {module_name!r} (module:callable, or a model folder)")
        return settings, spec
    local = Path(spec).expanduser()
    if spec.startswith(("/", "./", "../", "~")) and not local.exists():
        raise InvalidInput(f"--model {spec}: model directory {spec} does not exist")
    adapter = (local / "adapter_config.json").is_file()
    settings = with_overrides(
        settings,
        flag("--model", spec, "model.adapter" if adapter else "model.base"),
        # A full model is served alone: "none" is ModelSettings' word for no adapter.
        flag("--model", None if adapter else "none", "model.adapter"),
    )
    return settings, DEFAULT_MODEL


class LazySentimentModel:
    """A :class:`engine.ports.SentimentModel` that loads its model at the first text it scores.

    A replay with no news (a kline CSV) then never loads torch or the transformer, and starts at once. The
    batcher calls ``predict_proba`` off the event loop, so the lock keeps two threads from loading it twice.
    """

    def __init__(self, spec: str, model_settings: ModelSettings | None = None) -> None:
        self.spec = spec
        self._settings = model_settings
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def predict_proba(self, texts: Sequence[str]) -> list[tuple[float, float, float]]:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = load_model(self.spec, self._settings)
        result: list[tuple[float, float, float]] = self._model.predict_proba(texts)
        return result
