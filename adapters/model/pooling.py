"""Mean pooling for BERT-style sequence classifiers.

``BertForSequenceClassification`` classifies the ``[CLS]`` token (through the pooler's dense + tanh).
Sentence-transformers bases such as all-MiniLM-L6-v2 were trained to represent a sentence by the
*mean* of its token states, and ``[CLS]`` carries much less: a logistic regression on frozen features
of the FPB training split scores weighted F1 0.75 on the mean and 0.66 on the pooler output
(docs/model.md). :func:`use_mean_pooling` swaps the pooler's input for the attention-masked mean and
keeps its dense + tanh, so module names, LoRA targets and saved adapters stay exactly as they were.

The choice is recorded in the adapter's ``training_config.json`` (``pooling``); serving reads it
from there, so an adapter is always served the way it was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from engine.errors import InvalidInput

Pooling = Literal["cls", "mean"]
POOLINGS: tuple[str, ...] = ("cls", "mean")


class MaskedMeanPooler(nn.Module):
    """The encoder's pooler (dense + activation) applied to the masked mean of all token states."""

    def __init__(self, pooler: Any) -> None:
        super().__init__()
        self.dense: nn.Module = pooler.dense
        self.activation: nn.Module = pooler.activation
        # Set by capture_mask just before the encoder runs; the model is called from one thread at a time
        # (the micro-batcher's worker, or the training loop).
        self.attention_mask: torch.Tensor | None = None

    def capture_mask(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the encoder: remember this call's attention mask."""
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self.attention_mask = mask

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask, self.attention_mask = self.attention_mask, None
        if mask is None:
            mean = hidden_states.mean(dim=1)
        else:
            # Prefix tuning prepends virtual tokens to the mask, not to the states: keep the last columns.
            weights = mask[:, -hidden_states.shape[1] :].unsqueeze(-1).to(hidden_states.dtype)
            mean = (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.activation(self.dense(mean))


def use_mean_pooling(model: Any) -> Any:
    """Make ``model`` (a transformers sequence classifier with a BERT-style pooler) pool by masked mean.

    Raises:
        InvalidInput: the architecture has no pooler to re-point (e.g. RoBERTa, DistilBERT heads).
    """
    encoder = getattr(model, "base_model", None)
    pooler = getattr(encoder, "pooler", None)
    if encoder is None or pooler is None or not hasattr(pooler, "dense") or not hasattr(pooler, "activation"):
        raise InvalidInput(
            f"mean pooling needs a BERT-style encoder with a pooler; {type(model).__name__} has none "
            "(train with --pooling cls)"
        )
    if isinstance(pooler, MaskedMeanPooler):
        return model
    mean_pooler = MaskedMeanPooler(pooler)
    encoder.pooler = mean_pooler
    # A bound method: copy.deepcopy (e.g. torch's dynamic quantization) re-binds it to the copied pooler.
    encoder.register_forward_pre_hook(mean_pooler.capture_mask, with_kwargs=True)
    return model


def adapter_pooling(adapter: str | None) -> Pooling:
    """The pooling an adapter was trained with (``cls`` when it does not say)."""
    if not adapter:
        return "cls"
    path = Path(adapter) / "training_config.json"
    if not path.is_file():
        return "cls"
    pooling = json.loads(path.read_text()).get("config", {}).get("pooling", "cls")
    if pooling not in POOLINGS:
        raise InvalidInput(f"{path}: unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    return "mean" if pooling == "mean" else "cls"
