"""Tiny fine-tuning runs per method: the loss goes down, and a saved adapter reloads to identical predictions."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from adapters.datasets import Example  # noqa: E402
from adapters.model import ModelSettings, TransformersSentimentModel  # noqa: E402
from sigstream.modes.train.config import TrainConfig  # noqa: E402
from sigstream.modes.train.methods import METHODS  # noqa: E402
from sigstream.modes.train.trainer import build_model, epoch_order, evaluate_model, set_seed, train  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

PHRASES = {
    "bullish": [
        "profit rose sharply",
        "sales jumped to a record",
        "shares surged after strong results",
        "upgraded to buy",
    ],
    "bearish": ["profit fell sharply", "sales dropped to a low", "shares plunged after weak results", "cut to sell"],
    "neutral": [
        "the company is based in Helsinki",
        "the meeting is on Tuesday",
        "the report lists the board",
        "it employs staff",
    ],
}
COMPANIES = ["Acme", "Nokia", "Stora", "Kone", "Fortum", "Wartsila"]


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    rows = [f"{c} {p},{label}" for label, phrases in PHRASES.items() for p in phrases for c in COMPANIES[:4]]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")  # 48 examples, 16 per class
    return path


def tiny_config(method: str, data: Path, out: Path, **overrides: object) -> TrainConfig:
    fields: dict[str, object] = {
        "method": method, "data": [str(data)], "out": out, "epochs": 4, "batch_size": 8, "max_length": 32,
        "seed": 3, "val_fraction": 0.25, "patience": 10, "progress": False, "device": "cpu", "eval_data": [],
        # The loss these tiny runs were tuned with (the shipped recipe's smoothing and unweighted CE came later).
        "class_weights": True, "label_smoothing": 0.0,
    }  # fmt: skip
    if method in ("lora", "qlora"):  # and the small LoRA they were tuned with
        fields |= {"rank": 8, "alpha": 16, "target_modules": ["query", "value"]}
    fields.update(overrides)
    return TrainConfig.model_validate(fields)


def flat(probs: list) -> list[float]:
    return [x for p in probs for x in p]


def train_loss(model: object, tokenizer: object, cfg: TrainConfig, examples: list[Example]) -> float:
    _, loss = evaluate_model(model, tokenizer, examples, cfg, "cpu", torch.nn.CrossEntropyLoss())
    return loss


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("lora", {"lr": 3e-3}),
        ("qlora", {"lr": 3e-3}),
        ("prefix", {"lr": 3e-2, "prefix_tokens": 8}),
        ("prefix", {"lr": 3e-3, "prefix_tokens": 8, "prefix_projection": True}),
    ],
    ids=["lora", "qlora", "prefix", "prefix-projection"],
)
def test_tiny_run_lowers_the_training_loss(
    method: str, overrides: dict[str, object], tiny_csv: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(method, tiny_csv, tmp_path / method, **overrides)
    examples = [Example(t, y) for t, y in _rows(tiny_csv)]
    set_seed(cfg.seed)
    tokenizer, untrained, _ = build_model(cfg, "cpu")
    before = train_loss(untrained, tokenizer, cfg, examples)

    result = train(cfg)

    after = train_loss(result.model, result.tokenizer, cfg, examples)
    assert after < before - 0.02, f"{method}: loss {before:.4f} -> {after:.4f}"
    assert result.trainable_params < result.total_params / 10
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_config.json",
        "metrics.json",
        "training_curve.png",
    ):
        assert (tmp_path / method / name).is_file(), name
    stamp = json.loads((tmp_path / method / "training_config.json").read_text())
    assert stamp["sigstream_version"]
    assert stamp["config"]["method"] == method
    import torch

    # the run's float sums depend on the thread count and the library versions, so both are on record
    assert stamp["runtime"]["torch_threads"] == torch.get_num_threads()
    assert stamp["runtime"]["torch"] == torch.__version__ and stamp["runtime"]["peft"]
    assert not (tmp_path / method / "checkpoint").exists()


def _rows(path: Path) -> list[tuple[str, int]]:
    from adapters.datasets import load_spec

    data = load_spec(str(path))
    return [(e.text, e.label) for e in data.examples]


@pytest.fixture(scope="module")
def trained_lora(tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("lora")
    result = train(tiny_config("lora", tiny_csv, out, lr=3e-3, epochs=2, target_modules=["all-linear"]))
    return out, result


def test_saved_adapter_reloads_to_identical_predictions(trained_lora: tuple[Path, object]) -> None:
    out, result = trained_lora
    texts = ["Acme profit rose sharply", "Kone cut to sell", "the meeting is on Tuesday", "a new sentence"]
    cfg = TrainConfig(max_length=32)
    tokenizer = result.tokenizer
    result.model.eval()
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        in_memory = torch.softmax(result.model(**batch).logits, -1).tolist()

    settings = ModelSettings(adapter=str(out), quantize="none", device="cpu", max_length=cfg.max_length)
    unmerged = TransformersSentimentModel.optimized(settings.model_copy(update={"merge_adapter": False,
                                                                             "calibrate": False}))  # fmt: skip
    merged = TransformersSentimentModel.optimized(settings.model_copy(update={"calibrate": False}))

    reloaded = unmerged.predict_proba(texts)
    assert flat(reloaded) == pytest.approx(flat(in_memory), abs=1e-6)
    assert flat(merged.predict_proba(texts)) == pytest.approx(flat(reloaded), abs=1e-4)

    # Training fitted a temperature on its validation split; serving divides the logits by it.
    calibration = json.loads((out / "calibration.json").read_text())
    t = calibration["temperature"]
    assert calibration["n"] == result.val_metrics["n"] and t > 0
    calibrated = TransformersSentimentModel.optimized(settings.model_copy(update={"merge_adapter": False}))
    with torch.inference_mode():
        expected = torch.softmax(result.model(**batch).logits / t, -1).tolist()
    assert flat(calibrated.predict_proba(texts)) == pytest.approx(flat(expected), abs=1e-6)


def test_baseline_and_optimized_paths_agree_on_labels_and_keep_order(trained_lora: tuple[Path, object]) -> None:
    out, _ = trained_lora
    texts = [
        "Acme profit rose sharply and the board approved a much larger dividend than expected",
        "Kone cut to sell",
        "ok",
    ]
    settings = ModelSettings(adapter=str(out), device="cpu", max_length=32, batch_size=2)
    baseline = TransformersSentimentModel.baseline(settings)
    fp32 = TransformersSentimentModel.optimized(settings.model_copy(update={"quantize": "none"}))
    int8 = TransformersSentimentModel.optimized(settings.model_copy(update={"quantize": "int8-dynamic"}))

    base_probs = baseline.predict_proba(texts)
    assert flat(fp32.predict_proba(texts)) == pytest.approx(
        flat(base_probs), abs=1e-5
    )  # sorting/padding change nothing
    int8_probs = int8.predict_proba(texts)
    assert all(abs(sum(p) - 1) < 1e-5 for p in int8_probs)
    assert flat(int8_probs) == pytest.approx(flat(base_probs), abs=0.1)  # INT8 moves probabilities a little
    assert int8.predict_proba([]) == []


@pytest.mark.parametrize("native_bf16", [True, False], ids=["native-bf16-cpu", "cpu-without-bf16"])
def test_automatic_cpu_serving_uses_bf16_only_where_the_cpu_computes_it(
    trained_lora: tuple[Path, object], monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    from adapters.model import client

    monkeypatch.setattr(client, "cpu_has_native_bf16", lambda: native_bf16)
    out, _ = trained_lora
    texts = ["Acme profit rose sharply and the board approved a larger dividend", "Kone cut to sell", "ok"]
    settings = ModelSettings(adapter=str(out), device="cpu", max_length=32)
    auto = TransformersSentimentModel.optimized(settings)
    explicit_none = TransformersSentimentModel.optimized(settings.model_copy(update={"quantize": "none"}))

    assert ("[cpu, none, bfloat16]" if native_bf16 else "[cpu, int8-dynamic, float32]") in auto.description
    assert "[cpu, none, float32]" in explicit_none.description  # asking for no quantization keeps exact fp32
    if native_bf16:
        together = auto.predict_proba(texts)
        alone = [auto.predict_proba([t])[0] for t in texts]
        exact = explicit_none.predict_proba(texts)
        assert flat(together) == pytest.approx(flat(exact), abs=0.02)  # bf16 rounding, no per-batch scales
        assert flat(together) == pytest.approx(flat(alone), abs=0.02)  # hardly moved by batch mates


def test_automatic_cpu_serving_picks_int8_only_for_the_bundled_base(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.model import client
    from adapters.model.config import bundled_base_path

    monkeypatch.setattr(client, "cpu_has_native_bf16", lambda: False)
    for base in (None, bundled_base_path(), client.BUNDLED_BASE_HUB_ID):
        assert client.resolve_quantize("auto", "cpu", None, base) == "int8-dynamic"
    # The teacher under INT8 scored weighted F1 0.09: another base is served in exact fp32 unless asked otherwise.
    assert client.resolve_quantize("auto", "cpu", None, "/cache/sigstream/sentiment") == "none"
    assert client.resolve_quantize("int8-dynamic", "cpu", None, "/cache/sigstream/sentiment") == "int8-dynamic"
    monkeypatch.setattr(client, "cpu_has_native_bf16", lambda: True)
    assert client.resolve_quantize("auto", "cpu", None, "/cache/sigstream/sentiment") == "none"  # bf16 weights


def test_resume_continues_from_the_checkpoint(tiny_csv: Path, tmp_path: Path) -> None:
    cfg = tiny_config("lora", tiny_csv, tmp_path / "r", lr=3e-3, epochs=2, evals_per_epoch=4)
    first = train(cfg.model_copy(update={"max_steps": 3, "keep_checkpoint": True}))
    assert (tmp_path / "r" / "checkpoint" / "training_state.pt").is_file()

    resumed = train(cfg.model_copy(update={"max_steps": 6, "resume": True}))

    assert len(first.step_losses) == 3
    assert len(resumed.step_losses) == 6
    assert resumed.step_losses[:3] == first.step_losses
    assert [h["step"] for h in resumed.history][: len(first.history)] == [h["step"] for h in first.history]
    assert not (tmp_path / "r" / "checkpoint").exists()


@pytest.mark.parametrize("keep", [True, False], ids=["keep-checkpoint", "default"])
def test_train_command_keeps_the_checkpoint_only_when_asked(tiny_csv: Path, tmp_path: Path, keep: bool) -> None:
    from typer.testing import CliRunner

    from sigstream.cli import app

    out = tmp_path / "cli"
    args = ["train", "--method", "lora", "--data", str(tiny_csv), "--out", str(out), "--max-steps", "1"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "8", *(["--keep-checkpoint"] if keep else [])])

    assert result.exit_code == 0, result.output
    assert (out / "checkpoint" / "training_state.pt").is_file() is keep


def test_length_grouped_order_is_a_permutation_with_the_short_batch_last() -> None:
    import random

    encoded = [[0] * (i % 17 + 1) for i in range(103)]
    order = epoch_order(encoded, 8, random.Random(1))
    assert sorted(order) == list(range(103))
    assert order == epoch_order(encoded, 8, random.Random(1))
    batches = [order[s : s + 8] for s in range(0, 103, 8)]
    assert len(batches[-1]) == 103 % 8


def test_every_registered_method_builds_a_peft_config_or_trains_in_full() -> None:
    for method in METHODS.values():
        peft_config = method.peft_config(TrainConfig(method=method.name))
        if method.name == "full":
            assert peft_config is None  # no tuner: the model itself trains
        else:
            assert peft_config.task_type == "SEQ_CLS"


def test_qlora_keeps_the_new_head_out_of_4bit(tiny_csv: Path, tmp_path: Path) -> None:
    import bitsandbytes as bnb

    _, model, _ = build_model(tiny_config("qlora", tiny_csv, tmp_path), "cpu")

    kinds = {name: type(m).__name__ for name, m in model.named_modules()}
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    head = [n for n, k in kinds.items() if n.endswith("classifier.modules_to_save.default")]
    assert head
    assert kinds[head[0]] == "Linear"


def test_qlora_with_a_4bit_head_fails_with_a_clear_reason(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.model import client
    from engine.errors import FatalError

    # transformers' own default skip list misses the head (see adapters.model.client.KBIT_SKIP_MODULES).
    monkeypatch.setattr(client, "KBIT_SKIP_MODULES", ())

    with pytest.raises(FatalError, match="never quantized"):
        train(tiny_config("qlora", tiny_csv, tmp_path / "q", max_steps=1))


def test_qlora_still_trains_after_an_evaluation_pass_on_cpu(tiny_csv: Path, tmp_path: Path) -> None:
    # bitsandbytes repacks 4-bit weights for its CPU inference kernel on the first eval-mode forward; the
    # trainer turns that off, or the next training step fails inside autograd.
    tokenizer, model, _ = build_model(tiny_config("qlora", tiny_csv, tmp_path), "cpu")
    batch = tokenizer(["profit rose a lot", "sales fell"], return_tensors="pt", padding=True)
    model.eval()
    with torch.inference_mode():
        model(**batch)
    model.train()

    loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([2, 0]))
    loss.backward()

    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_eval_serves_the_model_settings_from_the_environment(tiny_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstream.commands.evaluate import evaluate

    monkeypatch.setenv("SIGSTREAM_MODEL__QUANTIZE", "none")
    assert "[cpu, none," in evaluate(str(tiny_csv))["model"]
    assert "[cpu, int8-dynamic," in evaluate(str(tiny_csv), quantize="int8-dynamic")["model"]  # a flag wins


def test_the_worker_passes_model_settings_to_the_default_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstream.modes.sentiment import DEFAULT_MODEL, load_model
    from sigstream.settings import load_settings

    monkeypatch.setenv("SIGSTREAM_MODEL__QUANTIZE", "none")
    model = load_model(DEFAULT_MODEL, load_settings().model)
    assert "[cpu, none," in model.description


def test_a_base_with_its_own_head_is_trained_and_served_in_the_same_label_order(tiny_csv: Path, tmp_path: Path) -> None:
    # A FinBERT-style base orders its head positive/negative/neutral. Training must use that order, as
    # serving does, or whatever it learned as bearish would be served as bullish.
    import json
    import shutil

    base = Path(ModelSettings().base)
    finbert_like = tmp_path / "base"
    shutil.copytree(base, finbert_like)
    config = json.loads((finbert_like / "config.json").read_text())
    config |= {"id2label": {"0": "positive", "1": "negative", "2": "neutral"},
               "label2id": {"positive": 0, "negative": 1, "neutral": 2}}  # fmt: skip
    (finbert_like / "config.json").write_text(json.dumps(config))
    out = tmp_path / "adapter"
    result = train(tiny_config("lora", tiny_csv, out, base=str(finbert_like), lr=3e-3, epochs=3,
                               target_modules=["all-linear"], eval_data=[str(tiny_csv)]))  # fmt: skip
    trained = result.eval_metrics[str(tiny_csv)]
    assert trained["accuracy"] > 0.5  # it learned something, so a rotated label order would show
    served = TransformersSentimentModel.optimized(
        ModelSettings(base=str(finbert_like), adapter=str(out), quantize="none", device="cpu", max_length=32)
    )
    rows = _rows(tiny_csv)
    probs = served.predict_proba([text for text, _ in rows])
    served_accuracy = sum(max(range(3), key=p.__getitem__) == y for p, (_, y) in zip(probs, rows, strict=True))
    assert served_accuracy / len(rows) == pytest.approx(trained["accuracy"], abs=1e-9)


def test_serving_an_adapter_on_another_base_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from adapters.model.client import BUNDLED_BASE_HUB_ID, warn_if_other_base
    from adapters.model.config import bundled_base_path

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "ProsusAI/finbert"}))
    with caplog.at_level(logging.WARNING, logger="adapters.model.client"):
        warn_if_other_base(str(adapter), bundled_base_path())
    assert "was trained on ProsusAI/finbert" in caplog.text
    caplog.clear()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": BUNDLED_BASE_HUB_ID}))
    with caplog.at_level(logging.WARNING, logger="adapters.model.client"):
        warn_if_other_base(str(adapter), bundled_base_path())
    assert caplog.text == ""


def test_train_defaults_are_the_recipe_of_the_shipped_adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import sigstream.modes.train.trainer as trainer
    from adapters.model.config import DEFAULT_ADAPTER_DIR
    from sigstream.cli import app

    shipped = TrainConfig.load(DEFAULT_ADAPTER_DIR / "training_config.json")
    # Where the run happened and how it was watched, not what it trained; lr is compared as the rate used.
    not_recipe = {"out", "base", "progress", "device", "num_threads", "resume", "keep_checkpoint", "lr"}
    recipe = sorted(set(TrainConfig.model_fields) - not_recipe)

    def assert_shipped_recipe(cfg: TrainConfig) -> None:
        assert {f: getattr(cfg, f) for f in recipe} == {f: getattr(shipped, f) for f in recipe}
        assert (cfg.lr or METHODS[cfg.method].default_lr) == shipped.lr

    assert_shipped_recipe(TrainConfig())
    seen: list[TrainConfig] = []
    monkeypatch.setattr(trainer, "train", seen.append)  # only the config the bare command builds is checked
    CliRunner().invoke(app, ["train", "--out", str(tmp_path / "a")])
    assert len(seen) == 1
    assert_shipped_recipe(seen[0])


def test_the_make_recipes_parse_into_the_configs_the_docs_describe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # make train-teacher / train-distilled only run for half an hour or more: a typo in their flags must fail here.
    from typer.testing import CliRunner

    import sigstream.modes.train.trainer as trainer
    from sigstream.cli import app
    from sigstream.commands.train import DISTILLED_ADAPTER_ARGS, TEACHER_ARGS

    seen: list[TrainConfig] = []
    monkeypatch.setattr(trainer, "train", seen.append)
    for args in (TEACHER_ARGS, DISTILLED_ADAPTER_ARGS):
        before = len(seen)
        result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "run")])
        assert len(seen) == before + 1, result.output  # the flags parsed into a config that reached train()
    teacher, student = seen
    assert (teacher.method, teacher.base, teacher.epochs, teacher.lr, teacher.autocast) == (
        "full",
        "mpnet",
        3,
        5e-5,
        "bf16",
    )
    assert (student.method, student.epochs, student.distill_alpha, student.distill_temperature) == ("lora", 5, 1.0, 2.0)
    assert student.distill_from == ["teacher"] and student.unlabelled == ["cryptonews"] and student.distill_augment == 0
    for cfg in seen:  # the held-out splits the docs report are never trained on
        assert cfg.data == ["fpb:50:train", "tfns:train"] and cfg.eval_data == ["fpb:50:test", "tfns:test"]


def test_save_steps_checkpoints_between_evaluations(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sigstream.modes.train.trainer as trainer

    saved: list[int] = []
    real = trainer._save_checkpoint
    monkeypatch.setattr(
        trainer, "_save_checkpoint", lambda ckpt, state: (saved.append(state["step"]), real(ckpt, state))
    )
    # 36 training rows in batches of 8: 5 steps per epoch, one evaluation per epoch.
    train(tiny_config("lora", tiny_csv, tmp_path / "s", max_steps=4, save_steps=2, lr=3e-3))
    assert saved == [2, 4]  # step 2 by --save-steps, step 4 by the final evaluation
    saved.clear()
    train(tiny_config("lora", tiny_csv, tmp_path / "n", max_steps=4, lr=3e-3))
    assert saved == [4]


def test_distillation_loss_is_the_tempered_kl_plus_the_labelled_cross_entropy() -> None:
    from sigstream.modes.train.trainer import UNLABELLED, distillation_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    targets = torch.tensor([0, UNLABELLED])
    tau, alpha = 2.0, 0.25
    student = torch.softmax(logits / tau, -1)
    kl = (soft * (soft / student).log()).sum(-1).mean() * tau**2  # the definition, row by row
    ce = -torch.log_softmax(logits[0], -1)[0]  # only the labelled row
    loss = distillation_loss(torch.nn.CrossEntropyLoss(), tau, alpha)(logits, targets, soft)
    assert float(loss) == pytest.approx(float(alpha * kl + (1 - alpha) * ce), rel=1e-6)


def test_unlabelled_distillation_text_never_includes_a_held_out_or_labelled_text(
    tiny_csv: Path, tmp_path: Path
) -> None:
    from adapters.datasets.loader import load_spec
    from sigstream.modes.train.trainer import load_training_data, unlabelled_texts

    cfg = tiny_config("lora", tiny_csv, tmp_path, eval_data=[str(tiny_csv)])
    train_ex, val_ex, _ = load_training_data(cfg)
    extra = tmp_path / "extra.csv"
    novel = ["Fortum opened a new plant", "Wartsila shares rose"]
    rows = [*novel, val_ex[0].text, train_ex[0].text, novel[0]]
    extra.write_text("text,label\n" + "".join(f"{t},neutral\n" for t in rows))
    kept = unlabelled_texts(cfg.model_copy(update={"eval_data": [], "unlabelled": [str(extra)]}), train_ex, val_ex)
    assert kept == novel  # the validation text, the labelled one and the repeat are left out
    # A held-out spec is excluded too: here the whole tiny set is declared held out.
    assert unlabelled_texts(cfg.model_copy(update={"unlabelled": [str(tiny_csv)]}), train_ex, val_ex) == []
    assert load_spec(str(tiny_csv)).texts  # (the exclusion above is not an empty file)


def test_distilling_from_a_trained_adapter_over_unlabelled_text_trains_a_student(
    trained_lora: tuple[Path, object], tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGSTREAM_CACHE", str(tmp_path / "cache"))  # the teacher's probabilities are cached there
    teacher, _ = trained_lora
    extra = tmp_path / "extra.csv"
    unlabelled = [f"{c} {w}" for c in ("Fortum", "Kone") for w in ("profit rose", "sales fell", "opened a plant")]
    extra.write_text("text,label\n" + "".join(f"{t},neutral\n" for t in unlabelled))
    cfg = tiny_config("lora", tiny_csv, tmp_path / "student", lr=3e-3, epochs=2, distill_from=str(teacher),
                      unlabelled=[str(extra)], distill_alpha=0.7)  # fmt: skip
    result = train(cfg)
    assert len(result.step_losses) == 2 * 6  # 36 labelled + 6 unlabelled rows: 6 batches of 8 per epoch
    assert result.step_losses[-1] < result.step_losses[0]
    assert json.loads((tmp_path / "student" / "training_config.json").read_text())["config"]["distill_from"]


def test_teacher_probabilities_are_cached_per_teacher_and_text(
    trained_lora: tuple[Path, object], tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigstream.modes.train import trainer

    monkeypatch.setenv("SIGSTREAM_CACHE", str(tmp_path / "cache"))
    teacher, _ = trained_lora
    texts = ["Acme profit rose sharply", "Kone cut to sell", "the meeting is on Tuesday"]
    cfg = tiny_config("lora", tiny_csv, tmp_path / "student", distill_from=str(teacher))
    scored: list[list[str]] = []
    real = TransformersSentimentModel.optimized

    def counting(settings: object) -> object:
        model = real(settings)

        class Counted:
            description = model.description

            def predict_proba(self, batch: list[str]) -> list[tuple[float, float, float]]:
                scored.append(list(batch))
                return model.predict_proba(batch)

        return Counted()

    monkeypatch.setattr(TransformersSentimentModel, "optimized", staticmethod(counting))
    first = trainer.distill_targets(cfg, texts)
    again = trainer.distill_targets(cfg.model_copy(update={"distill_temperature": 1.0}), texts)
    assert scored == [texts], "the same teacher over the same texts is scored once"
    # The cache holds probabilities: another temperature re-tempers them exactly.
    settings = trainer.teacher_settings(cfg, str(teacher))
    cached = trainer.orjson.loads(trainer.teacher_probs_path(settings).read_bytes())
    raw = [cached[text] for text in texts]
    assert again == [trainer.softmax([math.log(p) for p in row], 1.0) for row in raw]
    assert first == [trainer.softmax([math.log(p) for p in row], cfg.distill_temperature) for row in raw]
    more = trainer.distill_targets(cfg, ["one more", *texts, "one more"])
    assert scored[1:] == [["one more"]], "only the texts no earlier run scored are scored, each once"
    assert more[1:4] == first and more[0] == more[4]
    # Scores are per text, so a text scored alone must equal it scored among others (batch invariance).
    alone = trainer.teacher_probs(settings.model_copy(update={"batch_size": 1}), ["Kone cut to sell"])
    assert alone == [cached["Kone cut to sell"]]
    weights = next(teacher.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert trainer.distill_targets(cfg, texts) == first
    assert scored[-1] == texts, "a retrained teacher (its files changed) misses the cache"


def test_a_teacher_that_auto_would_quantize_to_int8_is_scored_in_fp32(
    trained_lora: tuple[Path, object], tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # INT8 dynamic scores a text differently with other batch mates, which a per-text cache cannot hold.
    from sigstream.modes.train import trainer

    teacher, _ = trained_lora
    cfg = tiny_config("lora", tiny_csv, tmp_path / "student", distill_from=str(teacher))
    monkeypatch.setattr(trainer.client, "resolve_quantize", lambda quantize, *_args: "int8-dynamic")
    assert trainer.teacher_settings(cfg, str(teacher)).quantize == "none"
    monkeypatch.setattr(trainer.client, "resolve_quantize", lambda quantize, *_args: "none")
    assert trainer.teacher_settings(cfg, str(teacher)).quantize == "auto"


def test_an_ensemble_of_teachers_teaches_the_mean_of_their_probabilities(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigstream.modes.train import trainer

    scores = {"a": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "b": [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]}
    monkeypatch.setattr(trainer, "teacher_settings", lambda _cfg, teacher: teacher)
    monkeypatch.setattr(trainer, "teacher_probs", lambda teacher, _texts: scores[teacher])
    cfg = tiny_config("lora", tiny_csv, tmp_path, distill_from=["a", "b"], distill_temperature=2.0)
    mean = [[0.4, 0.2, 0.4], [0.2, 0.2, 0.6]]  # by hand
    expected = [trainer.softmax([math.log(p) for p in row], 2.0) for row in mean]
    assert flat(trainer.distill_targets(cfg, ["x", "y"])) == pytest.approx(flat(expected), abs=1e-12)
    alone = [trainer.softmax([math.log(p) for p in row], 2.0) for row in scores["a"]]
    one = cfg.model_copy(update={"distill_from": ["a"]})
    assert flat(trainer.distill_targets(one, ["x", "y"])) == pytest.approx(flat(alone), abs=1e-12)


def test_a_training_config_with_one_teacher_as_a_string_still_loads(tmp_path: Path) -> None:
    saved = tmp_path / "training_config.json"
    saved.write_text(json.dumps({"config": {"method": "lora", "out": "x", "distill_from": "teacher"}}))
    assert TrainConfig.load(saved).distill_from == ["teacher"]
    saved.write_text(json.dumps({"config": {"method": "lora", "out": "x", "distill_from": None}}))
    assert TrainConfig.load(saved).distill_from == []


def test_augmenting_without_a_teacher_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distill_from"):
        TrainConfig(out=tmp_path, distill_augment=2)


def test_the_augment_flag_without_a_teacher_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sigstream import cli

    monkeypatch.setattr("sys.argv", ["sigstream", "train", "--out", str(tmp_path / "a"), "--distill-augment", "2"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: --distill-augment adds texts with only a teacher's soft label: give --distill-from too\n"
    )


def test_augmented_variants_are_seeded_shorter_in_order_and_never_the_source() -> None:
    from sigstream.modes.train.augment import augmented_texts

    texts = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn", "Sales fell", "Kone cut its outlook for 2009"]
    first = list(augmented_texts(texts, 3, seed=42))
    assert first == list(augmented_texts(texts, 3, seed=42))
    assert first != list(augmented_texts(texts, 3, seed=7))
    assert len(first) == len(set(first)) and 3 < len(first) <= 6  # "Sales fell" is too short to vary
    for variant in first:
        source = next(t for t in texts if set(variant.split()) <= set(t.split()))
        words, kept = source.split(), variant.split()
        assert variant != source and len(kept) >= 3
        it = iter(words)
        assert all(w in it for w in kept), "a variant keeps its source's words in their order"


def test_augmented_transfer_texts_come_from_training_texts_and_skip_held_out_ones(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigstream.modes.train import trainer

    cfg = tiny_config("lora", tiny_csv, tmp_path, distill_from=["teacher"], distill_augment=2)
    train_ex, val_ex, _ = trainer.load_training_data(cfg)
    sources: list[list[str]] = []

    def fake_variants(texts: object, copies: int, seed: int) -> list[str]:
        sources.append(list(texts))  # type: ignore[call-overload]
        return ["a fresh variant here", val_ex[0].text, train_ex[1].text]

    monkeypatch.setattr(trainer, "augmented_texts", fake_variants)
    kept = trainer.unlabelled_texts(cfg.model_copy(update={"eval_data": []}), train_ex, val_ex)
    assert kept == ["a fresh variant here"]  # the validation text and the labelled one are left out
    assert sources == [list(dict.fromkeys(e.text for e in train_ex))]  # only training texts are varied


def test_full_fine_tuning_saves_a_model_that_serves_alone(tiny_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = train(tiny_config("full", tiny_csv, out, max_steps=2, lr=5e-5))
    assert result.trainable_params == result.total_params
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "calibration.json").is_file()
    texts = ["Acme profit rose sharply", "Kone cut to sell"]
    served = TransformersSentimentModel.optimized(
        ModelSettings(base=str(out), adapter=None, quantize="none", device="cpu", max_length=32, calibrate=False)
    )
    result.model.eval()
    with torch.inference_mode():
        batch = result.tokenizer(texts, padding=True, return_tensors="pt")
        expected = torch.softmax(result.model(**batch).logits, -1).tolist()
    assert flat(served.predict_proba(texts)) == pytest.approx(flat(expected), abs=1e-5)
