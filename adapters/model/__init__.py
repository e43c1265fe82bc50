"""The transformers/peft sentiment model adapter (implements engine.ports.SentimentModel)."""

from adapters.model.config import ModelSettings
from adapters.model.source import BaselineSentimentModel, TransformersSentimentModel, load_sentiment_model

__all__ = ["BaselineSentimentModel", "ModelSettings", "TransformersSentimentModel", "load_sentiment_model"]
