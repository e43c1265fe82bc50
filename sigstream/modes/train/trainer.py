"""A plain torch training loop for peft adapters on a sequence-classification base.

Class-weighted (or focal) loss, linear warmup then decay, AdamW with weight decay, gradient clipping,
early stopping on validation loss, a resumable checkpoint after every evaluation, a fixed seed, a tqdm
bar, and on exit: the best adapter, ``training_config.json``, ``metrics.json`` and ``training_curve.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from adapters.datasets import Example, LabelledSet, load_specs, stratified_split
from adapters.datasets.loader import split_examples
from adapters.model import client
from adapters.model.calibration import calibrate, expected_calibration_error, softmax
from engine.errors import FatalError, InvalidInput
from engine.events import SENTIMENT_LABELS
from sigstream.modes.train.augment import augmented_texts
from sigstream.modes.train.config import TrainConfig
from sigstream.modes.train.methods import get_method
from sigstream.modes.train.metrics import classification_metrics

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
# bitsandbytes asserts in fix_4bit_weight_quant_state_from_module when a Linear4bit holds a weight that was
# never quantized, which is what a head initialised after loading is; docs/model.md, "QLoRA on CPU".
KBIT_FORWARD_FAILED = (
    "{method} forward failed on {device} inside bitsandbytes ({exc}): a 4-bit layer holds a weight that was "
    "never quantized, typically a newly initialised head or pooler. Keep such modules out of 4-bit "
    "(adapters.model.client.KBIT_SKIP_MODULES) or train with --method lora."
)
STATE_FILE = "training_state.pt"
# Held out of every run: never used as unlabelled distillation text, even when a run does not score them.
FIXED_TEST_SPECS = ("fpb:50:test", "tfns:test")


@dataclass
class TrainResult:
    """What a run produced: where, how good, how costly."""

    out: Path
    history: list[dict[str, float]]
    val_metrics: dict[str, Any]
    eval_metrics: dict[str, dict[str, Any]]
    trainable_params: int
    total_params: int
    train_seconds: float
    peak_memory_mb: float
    stopped_early: bool
    step_losses: list[float] = field(default_factory=list)
    model: Any = None  # the trained peft model (best weights), for callers that keep using it in-process
    tokenizer: Any = None


def package_version() -> str:
    """sigstream's version from its installed metadata.

    Not ``sigstream.__version__``: under the console script, the editable install can import ``sigstream`` as
    a namespace package whose ``__init__`` never ran.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sigstream")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, device: str) -> tuple[Any, Any, Any]:
    """Base (quantized when the method says so) + a fresh peft adapter. Returns (tokenizer, model, label_index)."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    from adapters.model.teacher import resolve_base

    method = get_method(cfg.method)
    qconfig = client.bnb_config(method.quantize, compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    device_map = {"": device} if qconfig is not None else None
    base = resolve_base(cfg.base)  # "mpnet" / "teacher": the cached teacher models (adapters/model/teacher.py)
    tokenizer = client.load_tokenizer(base)
    model, label_index, _ = client.load_base(
        base, dtype=torch.float32, quantization_config=qconfig, device_map=device_map, quiet=True
    )
    if cfg.pooling == "mean":
        from adapters.model.pooling import use_mean_pooling

        use_mean_pooling(model)  # before peft: module names (and so the saved adapter) stay unchanged
    if qconfig is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        if device == "cpu":
            keep_4bit_weights_trainable(model)
    peft_config = method.peft_config(cfg)
    # No peft config is full fine-tuning: every weight trains and the model itself is saved.
    tuned: Any = model.requires_grad_(True) if peft_config is None else get_peft_model(model, peft_config)
    if device_map is None:
        tuned.to(device)
    return tokenizer, tuned, label_index


def keep_4bit_weights_trainable(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel during validation.

    On a CPU with AVX512-BF16, the first forward of a Linear4bit in eval mode repacks its weight in place for
    gemv_4bit, one way. The next training step then runs that inference kernel, whose in-place bias add
    autograd rejects ("a view of a leaf Variable ... in-place"), so QLoRA died on the first step after the
    first evaluation. docs/model.md, "QLoRA on CPU".
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def count_params(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def class_weights(labels: Sequence[int], n_classes: int = 3) -> list[float]:
    """Inverse-frequency weights, normalised so a balanced set gets 1.0 everywhere."""
    counts = [labels.count(c) for c in range(n_classes)]
    n = len(labels)
    return [n / (n_classes * c) if c else 0.0 for c in counts]


def make_loss(cfg: TrainConfig, weights: list[float] | None, device: str) -> Any:
    """Cross-entropy (weighted, smoothed) or focal loss, as a callable (logits, targets) -> loss."""
    import torch
    import torch.nn.functional as F

    w = torch.tensor(weights, device=device) if weights else None
    if cfg.focal_gamma is None:
        return torch.nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)
    gamma = cfg.focal_gamma

    def focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        logp_t = logp.gather(1, targets[:, None]).squeeze(1)
        loss = -((1 - logp_t.exp()) ** gamma) * logp_t
        if w is not None:
            loss = loss * w[targets]
            return loss.sum() / w[targets].sum()
        return loss.mean()

    return focal


def _batches(tokenizer: Any, encoded: list[list[int]], labels: list[int], idx: Sequence[int], device: str) -> Any:
    import torch

    batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    return batch, torch.tensor([labels[i] for i in idx], device=device)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: TrainConfig,
    device: str,
    loss_fn: Any = None,
    label_index: tuple[int, int, int] = (0, 1, 2),
    logits_out: list[list[float]] | None = None,
) -> tuple[dict[str, Any], float]:
    """Metrics (with ``ece``) and mean loss of ``model`` on ``examples`` (length-sorted batches, inference mode).

    ``label_index`` gives the head's column of (bearish, neutral, bullish), as :func:`build_model` returns it.
    ``logits_out``, when given, receives each example's logits in label order (for calibration).
    """
    import torch

    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=cfg.max_length)["input_ids"]
    labels = [label_index[e.label] for e in examples]  # in head-column space, like the logits
    to_label = {column: label for label, column in enumerate(label_index)}
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i]))
    preds = [0] * len(examples)
    total_loss = 0.0
    was_training = model.training
    model.eval()
    rows: list[list[float]] = [[]] * len(examples)
    with torch.inference_mode(), autocast(cfg, device):
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            batch, y = _batches(tokenizer, encoded, labels, idx, device)
            logits = model(**batch).logits.float()
            if loss_fn is not None:
                total_loss += float(loss_fn(logits, y)) * len(idx)
            for i, row in zip(idx, logits.tolist(), strict=True):
                preds[i] = to_label[max(range(len(row)), key=row.__getitem__)]
                rows[i] = [row[c] for c in label_index]  # label order, like serving's probabilities
    model.train(was_training)
    truth = [e.label for e in examples]
    metrics = classification_metrics(truth, preds)
    metrics["ece"] = expected_calibration_error([softmax(r) for r in rows], truth)
    if logits_out is not None:
        logits_out.extend(rows)
    return metrics, total_loss / max(1, len(examples))


def autocast(cfg: TrainConfig, device: str) -> Any:
    """bf16 autocast of the forward pass when ``cfg.autocast`` asks for it (a no-op context otherwise)."""
    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16")


UNLABELLED = -1  # the label of a distillation text without one: only the KL term sees it


def distillation_loss(ce: Any, temperature: float, alpha: float) -> Any:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labelled rows)`` (Hinton et al., 2015).

    ``T^2`` keeps the soft term's gradients on the scale of the hard term's whatever the temperature; unlabelled
    rows (label -1) enter only the KL term.
    """
    import torch
    import torch.nn.functional as F

    def loss(logits: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft, reduction="batchmean") * temperature**2
        labelled = targets != UNLABELLED
        hard = ce(logits[labelled], targets[labelled]) if bool(labelled.any()) else logits.new_zeros(())
        return alpha * kl + (1 - alpha) * hard

    return loss


def training_objective(
    cfg: TrainConfig, train_ex: list[Example], val_ex: list[Example], label_index: tuple[int, int, int], device: str
) -> tuple[list[str], list[int], Any]:
    """The texts a run trains on, their head-column labels (-1: unlabelled), and ``loss(logits, labels, indices)``.

    Without a teacher: the labelled texts and the configured loss. With ``distill_from``: plus the unlabelled
    texts, every text carrying the teacher's soft label, under :func:`distillation_loss`.
    """
    import torch

    texts = [e.text for e in train_ex]
    labels = [label_index[e.label] for e in train_ex]
    loss_fn = make_loss(cfg, class_weights(labels) if cfg.class_weights else None, device)
    if not cfg.distill_from:
        return texts, labels, lambda logits, y, _idx: loss_fn(logits, y)
    extra = unlabelled_texts(cfg, train_ex, val_ex)
    texts += extra
    labels += [UNLABELLED] * len(extra)
    targets = distill_targets(cfg, texts)  # label order; the student's head may order its columns otherwise
    soft = torch.tensor([[t[label_index.index(c)] for c in range(3)] for t in targets], device=device)
    distill = distillation_loss(loss_fn, cfg.distill_temperature, cfg.distill_alpha)
    return texts, labels, lambda logits, y, idx: distill(logits, y, soft[idx])


def teacher_settings(cfg: TrainConfig, teacher: str) -> Any:
    """Serving settings of ``teacher``, one of ``cfg.distill_from`` (its raw logits: calibration off).

    Its probabilities are cached per text (:func:`teacher_probs`), so a text's score must not depend on the texts it
    was batched with. Every serving choice but INT8 dynamic guarantees that (docs/model.md, "Batch invariance"); where
    ``quantize=auto`` would pick INT8 (a MiniLM teacher on a CPU without native bf16), the teacher runs exact fp32.
    """
    from adapters.model import ModelSettings

    if teacher == "teacher":
        settings = ModelSettings(base="teacher", calibrate=False)
    else:
        path = Path(teacher)
        if not path.is_dir():
            raise InvalidInput(f"--distill-from {teacher}: not a directory (an adapter, a full model, or 'teacher')")
        if (path / "adapter_config.json").is_file():
            extra = {"base": cfg.distill_base} if cfg.distill_base else {}
            settings = ModelSettings(adapter=str(path), calibrate=False, **extra)
        else:
            settings = ModelSettings(base=str(path), adapter=None, calibrate=False)
    device = client.resolve_device(settings.device)
    if client.resolve_quantize(settings.quantize, device, settings.adapter, settings.base) == "int8-dynamic":
        settings = settings.model_copy(update={"quantize": "none"})
    return settings


def distill_targets(cfg: TrainConfig, texts: Sequence[str]) -> list[list[float]]:
    """The teacher's soft labels ``softmax(log p / T)`` per text, in label order (bearish, neutral, bullish).

    ``log p`` is the logits up to a per-row constant, which softmax ignores. With several teachers, ``p`` is the
    mean of their probabilities (here t1 + t2 scored no better than t1 alone: docs/model.md).
    """
    members = [teacher_probs(teacher_settings(cfg, teacher), texts) for teacher in cfg.distill_from]
    probs = [[sum(column) / len(members) for column in zip(*rows, strict=True)] for rows in zip(*members, strict=True)]
    return [softmax([math.log(max(p, 1e-45)) for p in row], cfg.distill_temperature) for row in probs]


def teacher_probs(settings: Any, texts: Sequence[str]) -> list[list[float]]:
    """One teacher's probabilities of ``texts``, scored through the serving path before the student's first step.

    They are cached per text (``cache_root()/distill/<teacher>.json``, a map text -> probabilities, the teacher
    keyed by its files and serving settings), so another student of the same teacher scores only the texts no
    earlier student had: a different temperature or alpha scores none, ``--distill-augment`` only its variants.
    """
    cached = teacher_probs_path(settings)
    known = read_teacher_cache(cached)
    missing = list(dict.fromkeys(text for text in texts if text not in known))
    if missing:
        from adapters.model import TransformersSentimentModel

        teacher = TransformersSentimentModel.optimized(settings)
        started = time.perf_counter()
        scored = teacher.predict_proba(missing)
        log.info("teacher %s: %d texts in %.0f s", teacher.description, len(missing), time.perf_counter() - started)
        # Another student of the same teacher may have added texts meanwhile: merge with what is there now.
        known = {**read_teacher_cache(cached), **{text: list(row) for text, row in zip(missing, scored, strict=True)}}
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(orjson.dumps(known))
        partial.replace(cached)  # a killed run leaves no half-written cache entry
    log.info("teacher probabilities: %d of %d texts from %s", len(texts) - len(missing), len(texts), cached)
    return [list(known[text]) for text in texts]


def read_teacher_cache(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    cached: dict[str, list[float]] = orjson.loads(path.read_bytes())
    return cached


def teacher_probs_path(settings: Any) -> Path:
    """Where one teacher's probabilities are cached: a digest of every file of the teacher's model directories
    (name, size, mtime) and its serving settings, so retraining the teacher misses."""
    from adapters.model.teacher import cache_root, resolve_base

    digest = hashlib.sha256(settings.model_dump_json().encode())
    for name in (settings.base, settings.adapter):
        directory = Path(resolve_base(name)) if name else None
        if directory is None or not directory.is_dir():
            digest.update(f"<{name}>".encode())  # a hub id: its revision is the hub's business
            continue
        for file in sorted(f for f in directory.rglob("*") if f.is_file() and "checkpoint" not in f.parts):
            stat = file.stat()
            digest.update(f"{file.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / "distill" / f"{digest.hexdigest()[:32]}.json"


def unlabelled_texts(cfg: TrainConfig, train_ex: Sequence[Example], val_ex: Sequence[Example]) -> list[str]:
    """The unlabelled specs' texts, less every held-out text and every text already labelled for training.

    Held out: this run's validation split, its ``eval_data`` specs, and the fixed test splits (``fpb:50:test``,
    ``tfns:test``) whenever they can be read; FPB sentences are compared across agreement levels.
    """
    from adapters.datasets.loader import _cross_level_key, load_unlabelled

    held_out = {_cross_level_key(e.text) for e in val_ex}
    for spec in dict.fromkeys([*cfg.eval_data, *FIXED_TEST_SPECS]):
        try:
            held_out.update(_cross_level_key(t) for t in load_specs([spec]).texts)
        except InvalidInput as exc:
            if spec in cfg.eval_data:
                raise
            log.info("unlabelled: cannot read %s to exclude it (%s)", spec, exc.reason)
    seen = {_cross_level_key(e.text) for e in train_ex}
    kept: list[str] = []
    dropped = 0
    sources: dict[str, Iterable[str]] = {spec: load_unlabelled(spec) for spec in cfg.unlabelled}
    if cfg.distill_augment:
        # Variants of the labelled training texts only (each once, however often the data repeats it).
        labelled = dict.fromkeys(e.text for e in train_ex)
        sources[f"{cfg.distill_augment} variants per training text"] = augmented_texts(
            labelled, cfg.distill_augment, cfg.seed
        )
    for name, source in sources.items():
        before = len(kept)
        for text in source:
            key = _cross_level_key(text)
            if key in held_out or key in seen:
                dropped += 1
                continue
            seen.add(key)
            kept.append(text)
        log.info("unlabelled: %d texts from %s", len(kept) - before, name)
    log.info("unlabelled: %d texts in all (%d held out, labelled or repeated, left out)", len(kept), dropped)
    return kept


def epoch_order(encoded: Sequence[Sequence[int]], batch_size: int, rng: random.Random) -> list[int]:
    """Shuffled order whose consecutive batches hold texts of similar length (less padding per step).

    Like transformers' group_by_length: shuffle, cut into mega-batches of 50 batches, sort each by length,
    then shuffle the batches themselves so the length pattern does not repeat.
    """
    order = list(range(len(encoded)))
    rng.shuffle(order)
    mega = batch_size * 50
    grouped: list[int] = []
    for s in range(0, len(order), mega):
        grouped.extend(sorted(order[s : s + mega], key=lambda i: len(encoded[i]), reverse=True))
    batches = [grouped[s : s + batch_size] for s in range(0, len(grouped), batch_size)]
    # The one short batch stays last so the fixed-size slices the loop takes line up with these batches.
    tail = batches.pop() if batches and len(batches[-1]) < batch_size else []
    rng.shuffle(batches)
    return [i for b in [*batches, tail] for i in b]


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _subsample(examples: list[Example], n: int, seed: int) -> list[Example]:
    if n >= len(examples):
        return examples
    _, kept = stratified_split(examples, n / len(examples), seed)
    return kept


def load_training_data(cfg: TrainConfig) -> tuple[list[Example], list[Example], LabelledSet]:
    """Train and validation examples (time split when timestamps exist, else stratified)."""
    data = load_specs(cfg.data)
    if data.bad_rows:
        log.warning("%d bad rows skipped in %s (first: %s)", len(data.bad_rows), data.name, data.bad_rows[0])
    examples = data.examples
    if cfg.max_examples is not None:
        examples = _subsample(examples, cfg.max_examples, cfg.seed)
    if len(examples) < 3:
        raise InvalidInput(f"{len(examples)} usable examples in {cfg.data}; need at least 3")
    train, val = split_examples(examples, cfg.val_fraction, cfg.seed)
    if not val:
        raise InvalidInput("validation split is empty: add data or raise --val-fraction")
    return train, val, data


def train(cfg: TrainConfig) -> TrainResult:
    """Run one fine-tuning job as configured; see the module docstring for what it writes."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    method = get_method(cfg.method)
    device = client.resolve_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    train_ex, val_ex, data = load_training_data(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_DIR

    # A base with its own sentiment head (FinBERT: positive/negative/neutral) keeps its column order;
    # training targets and predictions go through label_index, exactly as serving reads the head.
    tokenizer, model, label_index = build_model(cfg, device)
    trainable, total = count_params(model)
    log.info("%s: %d trainable of %d parameters", cfg.method, trainable, total)

    texts, labels, loss_of = training_objective(cfg, train_ex, val_ex, label_index, device)
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    # Validation loss is unweighted so early stopping tracks plain likelihood on the real class mix.
    val_loss_fn = torch.nn.CrossEntropyLoss()

    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)  # every text, the unlabelled distillation ones too
    total_steps = (
        steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr or method.default_lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(total_steps * cfg.warmup_ratio), total_steps)
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)

    history: list[dict[str, float]] = []
    step_losses: list[float] = []
    step, best_loss, bad_evals, elapsed_before = 0, math.inf, 0, 0.0
    best_state: dict[str, Any] | None = None
    if cfg.resume and (ckpt / STATE_FILE).is_file():
        state = torch.load(ckpt / STATE_FILE, map_location=device, weights_only=False)
        load_trainable(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_loss, bad_evals = state["step"], state["best_loss"], state["bad_evals"]
        history, step_losses, best_state = state["history"], state["step_losses"], state["best_adapter"]
        elapsed_before = state["elapsed"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", ckpt, step)

    def checkpoint_state() -> dict[str, Any]:
        return {
            "adapter": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "best_loss": best_loss,
            "bad_evals": bad_evals,
            "history": history,
            "step_losses": step_losses,
            "best_adapter": best_state,
            "elapsed": elapsed_before + time.perf_counter() - started,
            "torch_rng": torch.get_rng_state(),
        }

    started = time.perf_counter()
    stopped_early = False
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.method}", disable=not cfg.progress, unit="step")
    while step < total_steps and not stopped_early:
        epoch = step // steps_per_epoch
        # Each epoch's order depends only on (seed, epoch), so a resumed run sees the same batches.
        order = epoch_order(encoded, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch))
        for b in range(step % steps_per_epoch, steps_per_epoch):
            if step >= total_steps:
                break
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            batch, y = _batches(tokenizer, encoded, labels, idx, device)
            try:
                with autocast(cfg, device):
                    logits = model(**batch).logits.float()
                loss = loss_of(logits, y, idx)
            except AssertionError as exc:
                if method.quantize == "none":
                    raise
                raise FatalError(KBIT_FORWARD_FAILED.format(method=cfg.method, device=device, exc=repr(exc))) from exc
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            step_losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{step_losses[-1]:.4f}")
            if cfg.save_steps and step % cfg.save_steps == 0 and step % eval_every and step != total_steps:
                _save_checkpoint(ckpt, checkpoint_state())  # between evaluations, so a Ctrl-C keeps the work
            if step % eval_every == 0 or step == total_steps:
                metrics, val_loss = evaluate_model(model, tokenizer, val_ex, cfg, device, val_loss_fn, label_index)
                recent = step_losses[-eval_every:]
                history.append(
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "train_loss": sum(recent) / len(recent),
                        "val_loss": val_loss,
                        "val_accuracy": metrics["accuracy"],
                        "val_weighted_f1": metrics["weighted_f1"],
                    }
                )
                log.info("step %d: val loss %.4f, weighted F1 %.4f", step, val_loss, metrics["weighted_f1"])
                if val_loss < best_loss:
                    best_loss, bad_evals = val_loss, 0
                    best_state = trainable_state(model)
                else:
                    bad_evals += 1
                    stopped_early = bad_evals >= cfg.patience
                _save_checkpoint(ckpt, checkpoint_state())
                if stopped_early:
                    log.info("early stop at step %d: val loss did not improve for %d evaluations", step, bad_evals)
                    break
    bar.close()
    train_seconds = elapsed_before + time.perf_counter() - started

    if best_state is not None:
        load_trainable(model, best_state)
    save_model(model, tokenizer, cfg)
    val_metrics, eval_metrics = _score_and_calibrate(model, tokenizer, val_ex, cfg, device, label_index)
    result = TrainResult(
        out,
        history,
        val_metrics,
        eval_metrics,
        trainable,
        total,
        train_seconds,
        _peak_memory_mb(device),
        stopped_early,
        step_losses,
        model,
        tokenizer,
    )
    _write_reports(cfg, result, data, len(train_ex), len(val_ex), device)
    if not cfg.keep_checkpoint:
        shutil.rmtree(ckpt, ignore_errors=True)
    return result


def save_model(model: Any, tokenizer: Any, cfg: TrainConfig) -> None:
    """The adapter (peft methods) or the whole model with its tokenizer (``full``, served from its own directory)."""
    model.save_pretrained(cfg.out)
    if get_method(cfg.method).peft_config(cfg) is None:
        tokenizer.save_pretrained(cfg.out)


def _score_and_calibrate(
    model: Any, tokenizer: Any, val_ex: list[Example], cfg: TrainConfig, device: str, label_index: tuple[int, int, int]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Validation metrics, calibration.json fitted on the validation split (which training never took a gradient
    on; adapters/model/calibration.py), and each held-out spec's metrics with its ECE after calibration."""
    val_logits: list[list[float]] = []
    val_metrics, _ = evaluate_model(model, tokenizer, val_ex, cfg, device, label_index=label_index,
                                    logits_out=val_logits)  # fmt: skip
    cal = calibrate(val_logits, [e.label for e in val_ex], [f"validation split of {'+'.join(cfg.data)}"])
    cal.save(cfg.out)
    log.info("temperature %.4f: validation ECE %.4f -> %.4f", cal.temperature, cal.ece_before, cal.ece_after)
    eval_metrics: dict[str, dict[str, Any]] = {}
    for spec in cfg.eval_data:
        held_out = load_specs([spec])
        rows: list[list[float]] = []
        metrics, _ = evaluate_model(model, tokenizer, held_out.examples, cfg, device, label_index=label_index,
                                    logits_out=rows)  # fmt: skip
        metrics["ece_calibrated"] = expected_calibration_error(
            [softmax(r, cal.temperature) for r in rows], held_out.labels
        )
        eval_metrics[spec] = metrics
        log.info("%s: weighted F1 %.4f, accuracy %.4f", spec, metrics["weighted_f1"], metrics["accuracy"])
    return val_metrics, eval_metrics


def trainable_state(model: Any) -> dict[str, Any]:
    """Copies of the trainable tensors, by module path.

    Not peft's get_peft_model_state_dict: for prefix tuning with a projection that exports the projected
    prefix (the inference form), which cannot be loaded back into a model that is still training.
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, Any]) -> None:
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise FatalError(f"checkpoint does not match the model: unknown tensors {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)


def _save_checkpoint(ckpt: Path, state: dict[str, Any]) -> None:
    import torch

    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt / STATE_FILE)  # atomic, so a kill mid-save leaves the previous checkpoint intact


def runtime_stamp() -> dict[str, Any]:
    """What decides a run's float sums besides the config: the library versions and torch's CPU thread count.

    A CPU run repeated at the same thread count gave the same validation losses to every printed digit; a different
    count (2 threads against 1) reorders the reductions, and over thousands of steps that moved a student by 0.016
    weighted F1 on FPB (docs/model.md). The count is the one at the end of the run: a ``--resume`` with other
    ``--threads`` changes it midway.
    """
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _write_reports(
    cfg: TrainConfig, result: TrainResult, data: LabelledSet, n_train: int, n_val: int, device: str
) -> None:
    out = result.out
    stamp = {
        "sigstream_version": package_version(),
        "labels": list(SENTIMENT_LABELS),
        "config": json.loads(cfg.model_dump_json()),
        "n_train": n_train,
        "n_val": n_val,
        "bad_rows": len(data.bad_rows),
        "device": device,
        "runtime": runtime_stamp(),
    }
    (out / "training_config.json").write_text(json.dumps(stamp, indent=2) + "\n")
    metrics = {
        "sigstream_version": package_version(),
        "method": cfg.method,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "train_seconds": round(result.train_seconds, 1),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "peak_memory_kind": "cuda max_memory_allocated" if device == "cuda" else "process peak RSS",
        "steps": len(result.step_losses),
        "stopped_early": result.stopped_early,
        "validation": result.val_metrics,
        "held_out": result.eval_metrics,
        "history": result.history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "README.md").write_text(adapter_readme(cfg, metrics))  # replaces peft's empty model-card template
    plot_curve(result, out / "training_curve.png")


def adapter_readme(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    """A short card: what the adapter is, how it scored, how to use it."""
    lines = [
        f"# sigstream sentiment adapter ({cfg.method})",
        "",
        f"Base: `{cfg.base}`. Labels: bearish, neutral, bullish. Data: {', '.join(cfg.data)}.",
        f"Trainable parameters: {metrics['trainable_params']:,}; training time {metrics['train_seconds']} s.",
        "",
        "| split | n | accuracy | weighted F1 | macro F1 |",
        "|---|---|---|---|---|",
    ]
    for name, m in [("validation", metrics["validation"]), *metrics["held_out"].items()]:
        lines.append(f"| {name} | {m['n']} | {m['accuracy']:.4f} | {m['weighted_f1']:.4f} | {m['macro_f1']:.4f} |")
    lines += ["", f"Use: `sigstream eval --data fpb:50:test --model {cfg.out}`; config in training_config.json.", ""]
    return "\n".join(lines)


def plot_curve(result: TrainResult, path: Path) -> None:
    """Training loss per step (smoothed) and validation loss per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    losses = result.step_losses
    k = max(1, len(losses) // 50)
    smooth = [
        sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))
    ]
    ax.plot(range(1, len(losses) + 1), smooth, label=f"train loss (mean of {k})", alpha=0.8)
    if result.history:
        ax.plot([h["step"] for h in result.history], [h["val_loss"] for h in result.history], "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
