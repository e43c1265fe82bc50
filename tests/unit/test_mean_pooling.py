"""Mean pooling: the masked mean feeds the head, padding never changes a prediction, and an adapter
trained with it is served with it (``training_config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapters.model.classifier import TransformersSentimentModel
from adapters.model.client import load_base, load_tokenizer, quantize_dynamic_int8
from adapters.model.config import ModelSettings, bundled_base_path
from adapters.model.pooling import MaskedMeanPooler, adapter_pooling, use_mean_pooling
from engine.errors import InvalidInput
from sigstream.modes.train.config import TrainConfig
from sigstream.modes.train.trainer import train

SHORT, LONG = "Profit rose", "The company said on Tuesday that its quarterly operating profit rose sharply"


@pytest.fixture(scope="module")
def mean_pooled() -> tuple[object, object]:
    torch.manual_seed(0)
    model, _, _ = load_base(bundled_base_path(), dtype=torch.float32, quiet=True)
    return load_tokenizer(bundled_base_path()), use_mean_pooling(model).eval()


def test_the_head_sees_the_masked_mean_of_the_token_states(mean_pooled: tuple[object, object]) -> None:
    tokenizer, model = mean_pooled
    batch = tokenizer([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = model.base_model(**batch).last_hidden_state
        pooled = model.base_model(**batch).pooler_output
    pooler = model.base_model.pooler
    assert isinstance(pooler, MaskedMeanPooler)
    n_short = int(batch["attention_mask"][0].sum())
    expected = torch.tanh(pooler.dense(states[0, :n_short].mean(dim=0)))
    assert torch.allclose(pooled[0], expected, atol=1e-5)


def test_padding_does_not_change_a_prediction(mean_pooled: tuple[object, object]) -> None:
    tokenizer, model = mean_pooled
    with torch.inference_mode():
        alone = model(**tokenizer([SHORT], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([SHORT, LONG], padding=True, return_tensors="pt")).logits[0]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_dynamic_int8_copies_keep_mean_pooling(mean_pooled: tuple[object, object]) -> None:
    tokenizer, model = mean_pooled
    quantized = quantize_dynamic_int8(model)  # deep-copies the model, hooks included
    assert quantized.base_model.pooler is not model.base_model.pooler
    with torch.inference_mode():
        alone = quantized(**tokenizer([SHORT], return_tensors="pt")).logits[0]
        padded = quantized(**tokenizer([SHORT, LONG], padding=True, return_tensors="pt")).logits[0]
    assert torch.allclose(alone, padded, atol=0.05)  # INT8 activations are quantized per batch


def test_an_encoder_without_a_pooler_is_refused() -> None:
    with pytest.raises(InvalidInput, match="mean pooling needs a BERT-style encoder"):
        use_mean_pooling(torch.nn.Linear(2, 2))


def test_adapter_pooling_reads_the_training_config(tmp_path: Path) -> None:
    assert adapter_pooling(None) == "cls"
    assert adapter_pooling(str(tmp_path)) == "cls"  # no training_config.json: transformers' default
    (tmp_path / "training_config.json").write_text(json.dumps({"config": {"pooling": "mean"}}))
    assert adapter_pooling(str(tmp_path)) == "mean"
    (tmp_path / "training_config.json").write_text(json.dumps({"config": {"pooling": "max"}}))
    with pytest.raises(InvalidInput, match="unknown pooling 'max'"):
        adapter_pooling(str(tmp_path))


def test_a_mean_pooled_adapter_is_served_mean_pooled(tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    rows = [f"{word} news {i},{word}" for i in range(6) for word in ("bullish", "bearish", "neutral")]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    cfg = TrainConfig.model_validate({
        "method": "lora", "data": [str(data)], "out": tmp_path / "out", "epochs": 1, "batch_size": 6,
        "max_length": 16, "val_fraction": 0.34, "progress": False, "device": "cpu", "pooling": "mean",
        "target_modules": ["all-linear"], "lr": 3e-3,
    })  # fmt: skip
    result = train(cfg)
    texts = ["bullish news 1", "neutral news that is much longer than the others"]
    result.model.eval()
    with torch.inference_mode():
        batch = result.tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        in_memory = torch.softmax(result.model(**batch).logits, -1).tolist()
    # Training now also fits calibration.json; compared with the raw in-memory model, the served one must not scale.
    served = TransformersSentimentModel.optimized(
        ModelSettings(adapter=str(tmp_path / "out"), quantize="none", device="cpu", max_length=16, calibrate=False)
    )
    assert isinstance(served.model.base_model.pooler, MaskedMeanPooler)
    reloaded = [list(p) for p in served.predict_proba(texts)]
    assert [x for p in reloaded for x in p] == pytest.approx([x for p in in_memory for x in p], abs=1e-4)
