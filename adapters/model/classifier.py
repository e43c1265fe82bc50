"""The engine's SentimentModel port, implemented with transformers (+ peft adapters).

Two serving paths over the same weights:

* :meth:`TransformersSentimentModel.optimized`: batch-invariant batches (below), bf16 on a CPU that computes it
  natively, else INT8 dynamic quantization of the Linear layers (bf16 or a 4-bit base on CUDA).
* :meth:`TransformersSentimentModel.baseline` (also :class:`BaselineSentimentModel`): the chapter's
  loop, one text per forward pass in fp32, kept so that speed-ups can be measured against it.

Batch invariance: a text's probabilities must not depend on the texts it shares a forward pass with, or replay and
live (which batch the same news differently) disagree. Padding each batch to its longest text breaks that, because
the padded length changes the floating-point reductions. So each text is padded to a fixed bucket chosen by its own
token length (``ModelSettings.padding_buckets``) and batched only with texts of the same bucket. What the number of
rows still changes, measured on this project's CPU (docs/model.md):

* bf16 on CPU (oneDNN): nothing; any row count gives every row the same bits.
* fp32 on CPU (MKL): the encoder's Linear layers see texts x bucket rows, a multiple of 8, where MKL computes a row
  the same way whatever the row count; the pooler and head see one row per text, and below 12 rows MKL switches
  kernels (1, 2, 3, 5, 6, 7, 9, 10, 11 rows give other bits). :func:`pad_linear_rows` pads those inputs to a
  multiple of 8 rows, which costs nothing measurable.
* CUDA: cuBLAS picks kernels by shape, so every forward pass is padded to ``batch_size`` rows (one shape per
  bucket). Not measured here: no GPU was lent.

``quantize=int8-dynamic`` stays batch-dependent whatever the padding: it quantizes activations with one scale per
forward pass, computed over all the texts in it. It is opt-in (or the CPU default only where bf16 is emulated).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from adapters.model.calibration import scale_logits, served_temperature
from adapters.model.client import LoadedClassifier, load_classifier
from adapters.model.config import ModelSettings

if TYPE_CHECKING:
    import torch

Probs = tuple[float, float, float]

# Row counts that are multiples of 8 get the same bits per row from MKL's fp32 GEMM (1 to 11 rows, bar 4 and 8,
# do not); see the module docstring.
ROW_MULTIPLE = 8


DEVICE_SERVING: dict[str, Callable[[LoadedClassifier, ModelSettings], TransformersSentimentModel]] = {}
"""Serving paths of their own per device, registered by the module that holds one (``cuda``:
:mod:`adapters.model.gpu_serving`, which builds on this module, so it registers itself rather than being imported
here). A device without an entry is served by :class:`TransformersSentimentModel` itself."""


class TransformersSentimentModel:
    """(bearish, neutral, bullish) probabilities from a sequence-classification model.

    With ``padding_buckets`` (the serving default) a text's probabilities are the same bits whichever texts it is
    scored with, in whatever order; without them each batch is padded to its longest text, which is batch-dependent.

    Thread-safe: calls are serialised by a lock, because a fast tokenizer is not safe to share across
    threads and concurrent forward passes would only fight over the same cores.
    """

    def __init__(
        self,
        loaded: LoadedClassifier,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        sort_by_length: bool = True,
        padding_buckets: Sequence[int] = (),
        temperature: float = 1.0,
    ) -> None:
        self._loaded = loaded
        # calibration.json's temperature (adapters/model/calibration.py); 1.0 leaves the logits as they are.
        self.temperature = temperature
        self.batch_size = batch_size
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        # Buckets past max_length could never be filled (texts are truncated to it); max_length closes the list.
        self.padding_buckets: tuple[int, ...] = (
            (*sorted({b for b in padding_buckets if b < max_length}), max_length) if padding_buckets else ()
        )
        # On CUDA a fixed shape per bucket; on CPU only the per-text Linear inputs need padding (module docstring).
        self._fixed_rows = batch_size if self.padding_buckets and loaded.device == "cuda" else 0
        if self.padding_buckets and loaded.device == "cpu":
            pad_linear_rows(loaded.model)
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return self._loaded.description

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded.model

    @classmethod
    def optimized(cls, settings: ModelSettings | None = None) -> TransformersSentimentModel:
        """The engine's serving path: batched in padding buckets (batch-invariant), bf16 on a CPU with native bf16,
        else INT8 on CPU (``quantize=auto``; INT8 is batch-dependent); on CUDA the GPU path of
        :mod:`adapters.model.gpu_serving` (bf16, or a 4-bit base)."""
        settings = settings or ModelSettings()
        _apply_threads(settings)
        loaded = load_classifier(settings)
        if (serve_on_device := DEVICE_SERVING.get(loaded.device)) is not None:
            return serve_on_device(loaded, settings)
        return cls(
            loaded,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
            sort_by_length=settings.sort_by_length,
            padding_buckets=settings.padding_buckets,
            temperature=served_temperature(settings.adapter, settings.base, settings.calibrate),
        )

    @classmethod
    def baseline(cls, settings: ModelSettings | None = None) -> TransformersSentimentModel:
        """The chapter's baseline: one text per forward pass, fp32, no quantization, no sorting."""
        settings = (settings or ModelSettings()).model_copy(update={"dtype": "float32"})
        _apply_threads(settings)
        return cls(
            load_classifier(settings, quantize_override="none"),
            batch_size=1,
            max_length=settings.max_length,
            sort_by_length=False,
            temperature=served_temperature(settings.adapter, settings.base, settings.calibrate),
        )

    def predict_proba(self, texts: Sequence[str]) -> list[Probs]:
        """Probabilities of (bearish, neutral, bullish) for each text, in input order."""
        if not texts:
            return []
        with self._lock:
            return self._predict(list(texts))

    def _batches(self, lengths: list[int]) -> list[tuple[list[int], int | None]]:
        """Forward passes as (text indices, padded length); ``None`` pads to the batch's longest text."""
        size = self.batch_size
        if not self.padding_buckets:
            order = sorted(range(len(lengths)), key=lengths.__getitem__) if self.sort_by_length else range(len(lengths))
            ordered = list(order)
            return [(ordered[s : s + size], None) for s in range(0, len(ordered), size)]
        buckets = self.padding_buckets
        members: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            members.setdefault(buckets[min(bisect.bisect_left(buckets, n), len(buckets) - 1)], []).append(i)
        return [(idx[s : s + size], n) for n, idx in sorted(members.items()) for s in range(0, len(idx), size)]

    def _predict(self, texts: list[str]) -> list[Probs]:
        import torch

        tok = self._loaded.tokenizer
        encoded = tok(texts, truncation=True, max_length=self.max_length)
        ids: list[list[int]] = encoded["input_ids"]
        out: list[Probs | None] = [None] * len(texts)
        cols = list(self._loaded.label_index)
        device = self._loaded.device
        with torch.inference_mode():
            for chunk, length in self._batches([len(x) for x in ids]):
                # Extra rows (CUDA's fixed shape) repeat a real text: an all-padding row is a fully masked one.
                rows = chunk + [chunk[0]] * (self._fixed_rows - len(chunk))
                features: dict[str, Any] = {k: [encoded[k][i] for i in rows] for k in encoded.keys()}
                if length is None:
                    padded = tok.pad(features, return_tensors="pt")
                else:
                    padded = tok.pad(features, padding="max_length", max_length=length, return_tensors="pt")
                batch = {k: v.to(device) for k, v in padded.items()}
                logits = self._loaded.model(**batch).logits[: len(chunk)]
                probs = torch.softmax(scale_logits(logits.float(), self.temperature), dim=-1)[:, cols].cpu().tolist()
                for i, p in zip(chunk, probs, strict=True):
                    out[i] = (p[0], p[1], p[2])
        missing = [i for i, p in enumerate(out) if p is None]
        assert not missing, f"texts {missing[:5]} got no prediction"
        return out  # type: ignore[return-value]  # every slot is filled, checked just above


class BaselineSentimentModel(TransformersSentimentModel):
    """The chapter's ``batch_signals`` loop: one text per forward pass in fp32."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        built = TransformersSentimentModel.baseline(settings)
        super().__init__(
            built._loaded,
            batch_size=1,
            max_length=built.max_length,
            sort_by_length=False,
            temperature=built.temperature,
        )


class _RowPadding:
    """Forward hooks that pad a Linear's 2-D input (one row per text) to a multiple of :data:`ROW_MULTIPLE` rows
    and drop the extra output rows again. Zero rows are enough: a Linear's rows do not mix."""

    def __init__(self) -> None:
        # Rows of the call in flight per module; the model is called from one thread at a time (the lock).
        self._rows: dict[int, int] = {}

    def pad(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        import torch

        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 2:
            return None  # the encoder's 3-D inputs are texts x bucket rows already
        x = args[0]
        extra = -x.shape[0] % ROW_MULTIPLE
        if not extra:
            return None
        self._rows[id(module)] = x.shape[0]
        return (torch.cat([x, x.new_zeros(extra, x.shape[1])]), *args[1:])

    def unpad(self, module: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        rows = self._rows.pop(id(module), None)
        return None if rows is None else output[:rows]


def pad_linear_rows(model: torch.nn.Module) -> torch.nn.Module:
    """Make the per-text Linear layers (pooler, classification head) of ``model`` compute each row the same way
    whatever the number of texts in the forward pass (MKL's fp32 GEMM picks kernels by row count). Idempotent."""
    import torch

    if getattr(model, "_sigstream_row_padding", False):
        return model
    hooks = _RowPadding()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(hooks.pad)
            module.register_forward_hook(hooks.unpad)
    model._sigstream_row_padding = True  # type: ignore[assignment]  # a plain marker attribute
    return model


def _apply_threads(settings: ModelSettings) -> None:
    if settings.num_threads is not None:
        import torch

        torch.set_num_threads(settings.num_threads)


def load_sentiment_model(
    settings: ModelSettings | None = None, *, baseline: bool = False
) -> TransformersSentimentModel:
    """The factory the engine's wiring calls: the optimized path unless ``baseline`` is asked for."""
    return TransformersSentimentModel.baseline(settings) if baseline else TransformersSentimentModel.optimized(settings)
