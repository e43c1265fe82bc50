"""Raw transformers/peft/bitsandbytes loading: tokenizer, base classifier, peft adapter, quantization.

Local paths never touch the network. Hub ids (``ProsusAI/finbert``) go through the real
``from_pretrained``; set ``HF_HUB_OFFLINE=1`` where no network exists.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.model.config import ModelSettings, bundled_base_path
from engine.errors import FatalError, InvalidInput, MissingDependency
from engine.events import SENTIMENT_LABEL_INDEX, SENTIMENT_LABELS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ID2LABEL: dict[int, str] = dict(enumerate(SENTIMENT_LABELS))
LABEL2ID: dict[str, int] = {v: k for k, v in ID2LABEL.items()}
# Kept out of 4/8-bit. transformers' default skip list is the model's last parameter name minus ".weight";
# for BertForSequenceClassification that is "classifier.bias", which matches no module, so the new head
# becomes a Linear4bit holding never-quantized fp32 weights and bitsandbytes asserts on its first forward.
# The pooler is in all-MiniLM-L6-v2's checkpoint (quantizes fine) but not in every base. docs/model.md.
KBIT_SKIP_MODULES: tuple[str, ...] = ("classifier", "pooler", "score")


@dataclass(frozen=True, slots=True)
class LoadedClassifier:
    """A ready classifier: ``label_index[k]`` is the logit column of ``SENTIMENT_LABELS[k]``."""

    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    label_index: tuple[int, int, int]
    device: str
    description: str


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is a configuration error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FatalError("SIGSTREAM_MODEL__DEVICE=cuda but torch sees no CUDA device")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Without it, torch emulates bf16
    and is slower than fp32, so ``auto`` serving must not pick it."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own capability checks
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_dtype(dtype: str, device: str, *, quantize: str = "none", auto_serving: bool = False) -> torch.dtype:
    """Weight dtype. ``auto``: bf16 on CUDA; on CPU fp32, except that automatic serving (``quantize=auto``
    resolved to no quantization) uses bf16 on a CPU that computes it natively."""
    import torch

    if device == "cpu" and quantize != "none":
        return torch.float32  # quantized CPU kernels take fp32 activations
    if dtype == "auto":
        if device == "cuda" or (auto_serving and cpu_has_native_bf16()):
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def adapter_method(adapter: str | None) -> str | None:
    """The fine-tuning method recorded next to an adapter by ``sigstream train``, if any."""
    if not adapter:
        return None
    path = Path(adapter) / "training_config.json"
    if not path.is_file():
        return None
    method = json.loads(path.read_text()).get("config", {}).get("method")
    return str(method) if method else None


BUNDLED_BASE_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def warn_if_other_base(adapter: str | None, base: str) -> None:
    """Log when an adapter is served on another base than it was trained on (LoRA weights of the same
    shape load onto any base without complaint, and predict nonsense)."""
    if not adapter:
        return
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        return
    trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
    if not trained_on or trained_on == base:
        return
    if {trained_on, base} <= {BUNDLED_BASE_HUB_ID, bundled_base_path()}:
        return  # the bundled MiniLM is that hub model
    log.warning(
        "adapter %s was trained on %s but is served on %s; pass --base / SIGSTREAM_MODEL__BASE "
        "to serve it on its own base",
        adapter,
        trained_on,
        base,
    )


def resolve_quantize(quantize: str, device: str, adapter: str | None = None, base: str | None = None) -> str:
    """``auto`` on CPU: no quantization (bf16 weights, see :func:`resolve_dtype`) where the CPU computes bf16
    natively, else int8-dynamic (the chapter's deployment advice). bf16 is as fast as INT8 there, costs no F1,
    and hardly depends on batch mates, where INT8's per-batch activation scales move probabilities by up to 0.37
    (docs/model.md). On CUDA a QLoRA adapter is served on its 4-bit base, anything else in bf16.

    INT8 is chosen only for the bundled MiniLM base (``base`` None, that path or its hub id), where its cost is
    measured (weighted F1 0.7992 -> 0.7850); any other base gets fp32. The fine-tuned teacher (all-mpnet-base-v2)
    under int8-dynamic scores weighted F1 0.09 on FPB held-out (`sigstream bench`, 2026-12-02), so INT8 is never
    picked silently for a model it was not measured on; ``quantize=int8-dynamic`` still asks for it."""
    if quantize == "auto":
        if device == "cpu":
            if cpu_has_native_bf16():
                return "none"
            return "int8-dynamic" if base in (None, BUNDLED_BASE_HUB_ID, bundled_base_path()) else "none"
        return "4bit" if adapter_method(adapter) == "qlora" else "none"
    if quantize == "int8-dynamic" and device != "cpu":
        raise FatalError("quantize=int8-dynamic is a CPU serving option; use 4bit/8bit/none on CUDA")
    return quantize


def bnb_config(quantize: str, compute_dtype: torch.dtype, skip_modules: tuple[str, ...] | None = None) -> Any:
    """The bitsandbytes config for ``4bit`` (NF4, double quantization) or ``8bit``; None otherwise."""
    if quantize not in {"4bit", "8bit"}:
        return None
    try:
        import bitsandbytes  # noqa: F401 - only to fail early with an install hint
        from transformers import BitsAndBytesConfig
    except ModuleNotFoundError:
        raise MissingDependency("bitsandbytes", f"quantize={quantize}") from None
    skip = KBIT_SKIP_MODULES if skip_modules is None else skip_modules
    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(skip),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))


def load_tokenizer(base: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    if base.startswith(("/", "./", "../", "~")) and not Path(base).expanduser().exists():
        raise InvalidInput(f"model directory {base} does not exist")
    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as exc:  # a missing path reads as a malformed hub id (HFValidationError)
        raise InvalidInput(f"cannot load a tokenizer for model {base!r}: {exc}") from None


def head_label_index(id2label: dict[int, str] | None) -> tuple[int, int, int] | None:
    """Map an existing 3-way sentiment head (e.g. FinBERT's positive/negative/neutral) to our order."""
    if not id2label or len(id2label) != 3:
        return None
    ours: dict[int, int] = {}
    for column, name in id2label.items():
        ours_idx = SENTIMENT_LABEL_INDEX.get(str(name).strip().lower())
        if ours_idx is None:
            return None
        ours[ours_idx] = int(column)
    if len(ours) != 3:
        return None
    return (ours[0], ours[1], ours[2])


def load_base(
    base: str,
    *,
    dtype: torch.dtype,
    quantization_config: Any = None,
    device_map: Any = None,
    quiet: bool = False,
) -> tuple[PreTrainedModel, tuple[int, int, int], bool]:
    """Load a sequence-classification model.

    A base that already has a sentiment head keeps it (columns re-mapped to our label order); a plain
    encoder such as all-MiniLM-L6-v2 gets a new, untrained 3-way head.

    Returns:
        ``(model, label_index, new_head)``.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot load model {base!r}: {exc}") from None
    existing = head_label_index(getattr(config, "id2label", None))
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    if existing is None:
        kwargs.update(num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID)
    if quiet:
        # The load report lists the new head as MISSING; with an adapter supplying it that is only noise.
        from transformers.utils import logging as hf_logging

        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
        finally:
            hf_logging.set_verbosity(previous)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    return model, existing or (0, 1, 2), existing is None


def attach_adapter(model: PreTrainedModel, adapter: str, *, merge: bool, trainable: bool = False) -> Any:
    """Wrap ``model`` with the peft adapter in ``adapter``; merge LoRA weights into it when asked."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot load adapter {adapter!r}: {exc}") from None
    if merge and hasattr(peft_model, "merge_and_unload"):
        try:
            return peft_model.merge_and_unload()
        except (ValueError, NotImplementedError, AttributeError) as exc:
            # Prefix tuning has nothing to merge; keep the wrapper.
            log.info("adapter %s served unmerged: %s", adapter, exc)
    return peft_model


def quantize_dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """INT8 dynamic quantization of every nn.Linear (weights int8, activations quantized per batch)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization warns it is deprecated in favour of torchao; it still works in 2.13 and torchao
        # is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_classifier(settings: ModelSettings, *, quantize_override: str | None = None) -> LoadedClassifier:
    """Tokenizer + base + optional adapter, placed and quantized as ``settings`` say."""
    import torch

    device = resolve_device(settings.device)
    requested = quantize_override or settings.quantize
    quantize = resolve_quantize(requested, device, settings.adapter, settings.base)
    dtype = resolve_dtype(settings.dtype, device, quantize=quantize, auto_serving=requested == "auto")
    qconfig = bnb_config(quantize, compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    device_map = {"": device} if (qconfig is not None or device == "cuda") else None
    tokenizer = load_tokenizer(settings.base)
    model: Any
    model, label_index, new_head = load_base(
        settings.base, dtype=dtype, quantization_config=qconfig, device_map=device_map, quiet=bool(settings.adapter)
    )
    from adapters.model.pooling import adapter_pooling, use_mean_pooling

    if adapter_pooling(settings.adapter) == "mean":
        use_mean_pooling(model)  # served the way the adapter was trained
    if settings.adapter:
        warn_if_other_base(settings.adapter, settings.base)
        model = attach_adapter(model, settings.adapter, merge=settings.merge_adapter and qconfig is None)
    elif new_head:
        log.warning("model %s has no sentiment head and no adapter: predictions are untrained", settings.base)
    model.eval()
    if device_map is None:
        model = model.to(device)
    if quantize == "int8-dynamic":
        model = quantize_dynamic_int8(model)
    desc = f"{settings.base} + {settings.adapter or 'no adapter'} [{device}, {quantize}, {str(dtype).split('.')[-1]}]"
    return LoadedClassifier(tokenizer, model, label_index, device, desc)
