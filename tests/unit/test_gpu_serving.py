"""The GPU serving path's logic, run on CPU: the same class serves CUDA (adapters/model/gpu_serving.py), with pinned
memory and graphs only where CUDA exists. Its batches, order, invariance and error handling do not depend on them."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest

from adapters.model.classifier import TransformersSentimentModel
from adapters.model.config import ModelSettings
from adapters.model.gpu_serving import BATCHER_DEFAULTS, GpuSentimentModel, batcher_settings_for
from engine.config import BatcherSettings
from tests.unit.test_batch_invariance import HEADLINES

# A small budget, so that the texts below fill several forward passes per bucket on CPU.
SETTINGS = ModelSettings(
    device="cpu", quantize="none", dtype="bfloat16", gpu_token_budget=128, gpu_max_rows=16, gpu_tokenize_chunk=7
)
# Short and long texts in several buckets; few, as a CPU computes every padded row.
TEXTS = list(HEADLINES[:8] + HEADLINES[13:17] + HEADLINES[22:34])


@pytest.fixture(scope="module")
def gpu_model() -> GpuSentimentModel:
    return GpuSentimentModel.from_settings(SETTINGS)


def _shapes(model: GpuSentimentModel, texts: list[str]) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(tuple(kwargs["input_ids"].shape))  # type: ignore[arg-type]  # a 2-tuple of ints

    handle = model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model.predict_proba(texts)
    finally:
        handle.remove()
    return seen


def test_gpu_path_gives_the_cpu_path_bits_on_the_same_weights(gpu_model: GpuSentimentModel) -> None:
    cpu = TransformersSentimentModel(
        gpu_model._loaded,
        max_length=gpu_model.max_length,
        padding_buckets=SETTINGS.padding_buckets,
        temperature=gpu_model.temperature,
    )
    assert gpu_model.predict_proba(TEXTS) == cpu.predict_proba(TEXTS)
    assert gpu_model.attention == "sdpa"


def test_a_text_scores_the_same_alone_shuffled_and_among_other_mates(gpu_model: GpuSentimentModel) -> None:
    reference = gpu_model.predict_proba(TEXTS)
    assert [gpu_model.predict_proba([t])[0] for t in TEXTS[6:10]] == reference[6:10]
    rng = random.Random(3)
    shuffled = rng.sample(TEXTS, len(TEXTS))
    scored = dict(zip(shuffled, gpu_model.predict_proba(shuffled), strict=True))
    assert [scored[t] for t in TEXTS] == reference


def test_every_forward_pass_of_a_bucket_has_the_bucket_fixed_shape(gpu_model: GpuSentimentModel) -> None:
    shapes = _shapes(gpu_model, TEXTS + list(HEADLINES[:8]) * 2)
    by_length: dict[int, set[int]] = {}
    for rows, length in shapes:
        by_length.setdefault(length, set()).add(rows)
    assert all(rows == {gpu_model.rows_for(length)} for length, rows in by_length.items())
    assert all(rows * length <= max(128, 8 * length) for rows, length in shapes)  # the token budget
    assert len(shapes) > len(by_length)  # some bucket needed more than one forward pass


def test_rows_follow_the_token_budget_in_multiples_of_eight(gpu_model: GpuSentimentModel) -> None:
    assert gpu_model.rows_for(4) == 16  # capped by gpu_max_rows
    assert gpu_model.rows_for(8) == 16  # 128 // 8
    assert gpu_model.rows_for(12) == 8  # 128 // 12 = 10, down to a multiple of 8
    assert gpu_model.rows_for(128) == 8  # never fewer than 8
    plan = gpu_model._batches([5] * 20 + [20] * 3)
    assert [(len(i), n) for i, n in plan] == [(16, 8), (4, 8), (3, 24)]  # full ones first, then the rest


def test_free_padding_cuts_sorted_texts_by_the_token_budget(gpu_model: GpuSentimentModel) -> None:
    free = GpuSentimentModel.from_loaded(gpu_model._loaded, SETTINGS.model_copy(update={"padding_buckets": ()}))
    plan = free._batches([100, 3, 60, 4, 100, 5])
    assert [n for _, n in plan] == sorted(n for _, n in plan)
    assert all((len(i) + free._reserve_row) * n <= 128 or len(i) == 1 for i, n in plan)
    assert sorted(i for idx, _ in plan for i in idx) == list(range(6))
    texts = TEXTS[:6]
    assert [max(range(3), key=p.__getitem__) for p in free.predict_proba(texts)] == [
        max(range(3), key=p.__getitem__) for p in gpu_model.predict_proba(texts)
    ]


def test_a_tokenizer_failure_reaches_the_caller_and_the_thread_ends(
    gpu_model: GpuSentimentModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("tokenizer broke")

    monkeypatch.setattr(gpu_model._loaded.tokenizer.__class__, "__call__", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        gpu_model.predict_proba(TEXTS)
    assert not [t for t in threading.enumerate() if t.name == "sigstream-tokenize"]


def test_a_forward_failure_stops_the_tokenizer_thread(
    gpu_model: GpuSentimentModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("forward broke")

    monkeypatch.setattr(gpu_model, "_call_model", broken)
    with pytest.raises(RuntimeError, match="forward broke"):
        gpu_model.predict_proba(list(HEADLINES[:8]) * 12)  # more batches than the prefetch queue holds
    assert not [t for t in threading.enumerate() if t.name == "sigstream-tokenize"]


def test_no_texts_no_forward(gpu_model: GpuSentimentModel) -> None:
    assert gpu_model.predict_proba([]) == []


class _OnCuda:
    device = "cuda"


def test_the_micro_batcher_takes_the_device_defaults_unless_set() -> None:
    cuda = batcher_settings_for(_OnCuda(), BatcherSettings())
    assert (cuda.max_batch, cuda.max_wait_ms) == (
        BATCHER_DEFAULTS["cuda"]["max_batch"],
        BATCHER_DEFAULTS["cuda"]["max_wait_ms"],
    )
    assert batcher_settings_for(_OnCuda(), BatcherSettings(max_batch=32)).max_batch == 32
    assert batcher_settings_for(object(), BatcherSettings()) == BatcherSettings()  # CPU: the engine's defaults


def test_a_cli_flag_elsewhere_in_the_engine_section_keeps_the_device_defaults() -> None:
    from sigstream.settings import flag, load_settings, with_overrides

    settings = with_overrides(load_settings(), flag("--interval", "5m", "engine.interval"))
    assert batcher_settings_for(_OnCuda(), settings.engine.batcher).max_batch == BATCHER_DEFAULTS["cuda"]["max_batch"]


def test_the_gpu_modules_import_without_torch() -> None:
    code = (
        "import sys, adapters.model.gpu_serving, sigstream.modes.bench, sigstream.modes.train.memory, "
        "sigstream.commands.bench; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bench_texts_are_distinct_and_fall_back_to_generated_headlines() -> None:
    from sigstream.modes.bench import bench_texts

    texts, source = bench_texts(500, "/nonexistent/labelled.csv")
    assert source == "generated headlines"
    assert len(texts) == len(set(texts)) == 500


def test_qlora_ratios_come_from_the_peak_figures() -> None:
    from sigstream.modes.train.memory import peak_ratios

    rows = [
        {"encoder": "e", "method": "lora", "peak_mb": 400.0},
        {"encoder": "e", "method": "lora-bf16", "peak_mb": 200.0},
        {"encoder": "e", "method": "qlora", "peak_mb": 100.0},
        {"encoder": "f", "method": "qlora", "error": "boom"},
    ]
    none = dict.fromkeys(("qlora_vs_lora", "qlora_vs_lora-bf16", "qlora+gc_vs_lora", "qlora+gc_vs_lora-bf16"))
    assert peak_ratios(rows) == {
        "e": {**none, "qlora_vs_lora": 0.25, "qlora_vs_lora-bf16": 0.5},
        "f": none,
    }


def test_bench_prints_counts_as_integers_and_rates_with_one_decimal() -> None:
    from sigstream.commands import bench

    result = {
        "date": "2026-12-02",
        "machine": "test",
        "features": {"bars_per_s": 1.0},
        "bar_building": {"trades_per_s": 1.0},
        "kafka": {"frames": 12000, "news_sent": 40, "frames_per_s": 2345.67, "broker": "127.0.0.1:9092"},
    }
    with bench.console.capture() as captured:
        bench._print(result)
    text = captured.get()
    assert "12,000 " in text and "12,000.0" not in text
    assert " 40 " in text and "40.0" not in text
    assert "2,345.7" in text
