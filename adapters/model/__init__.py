"""The transformers/peft sentiment model adapter (implements engine.ports.SentimentModel)."""

import logging

# bitsandbytes logs a WARNING at import when the optional `kernels` package is absent; its own CPU
# kernels are used instead, so the message is noise on every model load.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from adapters.model.classifier import (  # noqa: E402
    BaselineSentimentModel,
    TransformersSentimentModel,
    load_sentiment_model,
)
from adapters.model.config import ModelSettings  # noqa: E402 - after the logger level, before bitsandbytes loads
from adapters.model.gpu_serving import GpuSentimentModel  # noqa: E402 - registers the CUDA serving path

__all__ = [
    "BaselineSentimentModel", "GpuSentimentModel", "ModelSettings", "TransformersSentimentModel",
    "load_sentiment_model",
]
