"""The GPU serving path: large fixed-shape batches chosen by token budget, tokenization overlapped with the forward.

:class:`GpuSentimentModel` is what :meth:`TransformersSentimentModel.optimized` returns on CUDA. Per call:

* A tokenizer thread runs the fast tokenizer's batch API over chunks of ``gpu_tokenize_chunk`` texts (the Rust
  tokenizer releases the GIL and fans out over the cores), sorts each text into its padding bucket, and hands on a
  bucket's batch as soon as it is full, packed into pinned host tensors. Tokenizing the next texts thus overlaps
  the forward pass of the current batch.
* The caller's thread copies each batch to the device with ``non_blocking=True`` and queues its forward pass; the
  probabilities stay on the device until the last batch is queued, so the host waits once per call, not per batch.
* Attention is PyTorch SDPA, given a 4-D boolean mask built on the device: transformers otherwise asks the device
  whether a batch has any padding (a host sync per forward) and, when it has none, picks another attention kernel,
  which would make a text's bits depend on whether its batch mates are padded.

Batch invariance (docs/model.md): each text is padded to its own bucket, and every forward pass of a bucket has the
same shape, ``rows(bucket) = gpu_token_budget // bucket`` rows (at most ``gpu_max_rows``, a multiple of 8), the
unused rows being padding. cuBLAS and the SDPA kernels choose their algorithm by shape, so a text then meets the same
kernels whatever it is batched with. With ``padding_buckets=[]`` batches are cut from length-sorted texts by the token
budget and padded to their longest text: fewer padded tokens, batch-dependent.

Optionally (``gpu_cuda_graphs``) one CUDA graph is captured per bucket shape and replayed, which removes the
per-kernel launch cost that dominates a small encoder such as MiniLM. A shape whose capture fails is served eagerly
and the reason logged (bitsandbytes' 4-bit kernels, for one, are not known to be capturable).

Nothing here touches CUDA at import time. The class runs on CPU too (no pinned memory, no graphs), which is how its
logic is tested without a GPU.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.model.calibration import scale_logits, served_temperature
from adapters.model.classifier import DEVICE_SERVING, ROW_MULTIPLE, Probs, TransformersSentimentModel
from adapters.model.client import LoadedClassifier, load_classifier
from adapters.model.config import ModelSettings
from engine.config import BatcherSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Micro-batcher defaults by device (engine.config.BatcherSettings holds the CPU ones, 64 texts / 50 ms). A GPU
# forward pass of 1,000 texts costs about what one of 64 does, so waiting a little for a larger batch is cheap.
BATCHER_DEFAULTS: dict[str, dict[str, int]] = {"cuda": {"max_batch": 1024, "max_wait_ms": 10}}

# Batches packed ahead of the forward pass at most: bounds the pinned host memory a call holds.
PREFETCH = 4


def batcher_settings_for(model: object, batcher: BatcherSettings) -> BatcherSettings:
    """``batcher`` with the serving device's defaults for the fields the user left unset.

    ``model`` is any SentimentModel; one without a ``device`` attribute (a test lexicon) is taken to be on CPU.
    A value set through ``SIGSTREAM_ENGINE__BATCHER__*`` (or the config file) wins, unless it equals the engine's
    own default: a CLI flag re-validates its whole settings section, which marks every field of it as set.
    """
    defaults = BATCHER_DEFAULTS.get(str(getattr(model, "device", "cpu")), {})
    engine_default = BatcherSettings()
    unset = {
        k: v
        for k, v in defaults.items()
        if k not in batcher.model_fields_set or getattr(batcher, k) == getattr(engine_default, k)
    }
    return batcher.model_copy(update=unset) if unset else batcher


def attention_implementation(model: Any) -> str:
    """Switch ``model`` (a transformers model, possibly wrapped by peft) to SDPA attention where it supports it;
    returns the implementation in use."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "set_attn_implementation") and getattr(base.config, "_attn_implementation", None) != "sdpa":
        try:
            base.set_attn_implementation("sdpa")
        except (ValueError, ImportError) as exc:  # an architecture without SDPA support keeps its own
            log.info("%s keeps %s attention: %s", type(base).__name__, base.config._attn_implementation, exc)
    return str(getattr(base.config, "_attn_implementation", "eager"))


def _uses_mean_pooling(model: Any) -> bool:
    from adapters.model.pooling import MaskedMeanPooler

    return any(isinstance(m, MaskedMeanPooler) for m in model.modules())


@dataclass(slots=True)
class _Batch:
    """One forward pass: the texts' positions in the call, their padded length, and pinned host tensors."""

    index: list[int]
    length: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass(slots=True)
class _Failed:
    error: BaseException


_DONE = object()


class GpuSentimentModel(TransformersSentimentModel):
    """(bearish, neutral, bullish) probabilities, served in token-budget batches with tokenization overlapped.

    Same contract as :class:`TransformersSentimentModel` (thread-safe, input order, batch-invariant with padding
    buckets); see the module docstring for how it differs inside.
    """

    def __init__(
        self,
        loaded: LoadedClassifier,
        *,
        max_length: int = 128,
        padding_buckets: Sequence[int] = (),
        token_budget: int = 16_384,
        max_rows: int = 4096,
        tokenize_chunk: int = 2048,
        cuda_graphs: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(
            loaded, batch_size=max_rows, max_length=max_length, padding_buckets=padding_buckets, temperature=temperature
        )
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.tokenize_chunk = tokenize_chunk
        self._fixed_rows = 0  # shapes are fixed per bucket here, by rows_for()
        self._on_cuda = loaded.device == "cuda"
        self.attention = attention_implementation(loaded.model)
        # A 4-D mask keeps transformers from inspecting the mask on the host (see the module docstring); mean
        # pooling reads the 2-D mask from the call, so it keeps that, and every batch then holds one padded row
        # (the kernel choice must not depend on whether a batch happens to be unpadded).
        self._mask_4d = self.attention == "sdpa" and not _uses_mean_pooling(loaded.model)
        self._reserve_row = 0 if self._mask_4d else 1
        self.cuda_graphs = cuda_graphs and self._on_cuda
        self._graphs: dict[tuple[int, int], _CapturedForward | None] = {}
        self._pad_id = int(loaded.tokenizer.pad_token_id or 0)

    @classmethod
    def from_settings(cls, settings: ModelSettings | None = None) -> GpuSentimentModel:
        """Load the classifier ``settings`` describe and serve it this way (on CPU too, for tests)."""
        settings = settings or ModelSettings()
        return cls.from_loaded(load_classifier(settings), settings)

    @classmethod
    def from_loaded(cls, loaded: LoadedClassifier, settings: ModelSettings) -> GpuSentimentModel:
        return cls(
            loaded,
            max_length=settings.max_length,
            padding_buckets=settings.padding_buckets,
            token_budget=settings.gpu_token_budget,
            max_rows=settings.gpu_max_rows,
            tokenize_chunk=settings.gpu_tokenize_chunk,
            cuda_graphs=settings.gpu_cuda_graphs,
            temperature=served_temperature(settings.adapter, settings.base, settings.calibrate),
        )

    @property
    def device(self) -> str:
        return self._loaded.device

    @property
    def description(self) -> str:
        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return f"{self._loaded.description} gpu serving: {self.token_budget} tokens/forward, {self.attention}{graphs}"

    def rows_for(self, length: int) -> int:
        """Rows of every forward pass of padded length ``length``: the token budget's worth, a multiple of 8."""
        rows = min(self.max_rows, self.token_budget // length) // ROW_MULTIPLE * ROW_MULTIPLE
        return max(ROW_MULTIPLE, rows)

    def capacity(self, length: int) -> int:
        """Texts per forward pass of padded length ``length``."""
        return self.rows_for(length) - self._reserve_row

    def _bucket(self, length: int) -> int:
        buckets = self.padding_buckets
        return buckets[min(bisect.bisect_left(buckets, length), len(buckets) - 1)]

    def _batches(self, lengths: list[int]) -> list[tuple[list[int], int | None]]:
        """Forward passes as (text indices, padded length), in the order :meth:`_predict` runs them."""
        return [(index, length) for index, length in self._plan(enumerate(lengths))]

    def _plan(self, items: Iterator[tuple[int, int]]) -> Iterator[tuple[list[int], int]]:
        """(index, token count) pairs -> (indices, padded length) batches, each yielded as soon as it is full."""
        if not self.padding_buckets:
            ordered = sorted(items, key=lambda item: item[1])
            batch: list[int] = []
            longest = 0
            for i, n in ordered:
                rows = len(batch) + 1 + self._reserve_row
                if batch and (rows > self.max_rows or rows * max(longest, n) > self.token_budget):
                    yield batch, longest
                    batch, longest = [], 0
                batch.append(i)
                longest = max(longest, n)
            if batch:
                yield batch, longest
            return
        pending: dict[int, list[int]] = {}
        for i, n in items:
            bucket = self._bucket(n)
            members = pending.setdefault(bucket, [])
            members.append(i)
            if len(members) == self.capacity(bucket):
                yield members, bucket
                pending[bucket] = []
        for bucket, members in sorted(pending.items()):
            if members:
                yield members, bucket

    def _predict(self, texts: list[str]) -> list[Probs]:
        import torch

        batches: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(texts, batches, stop), name="sigstream-tokenize")
        producer.start()
        device = torch.device(self._loaded.device)
        cols = list(self._loaded.label_index)
        scored: list[tuple[list[int], torch.Tensor]] = []
        try:
            with torch.inference_mode():
                while (item := batches.get()) is not _DONE:
                    if isinstance(item, _Failed):
                        raise item.error
                    logits = self._forward(item, device)[: len(item.index)]
                    # Still on the device: the host waits only once, below.
                    probs = torch.softmax(scale_logits(logits.float(), self.temperature), dim=-1)[:, cols]
                    scored.append((item.index, probs))
                if not scored:
                    return []
                rows = torch.cat([p for _, p in scored]).cpu().tolist()
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    batches.get(timeout=0.05)
                except queue.Empty:
                    continue
            producer.join()
        out: list[Probs | None] = [None] * len(texts)
        order = (i for index, _ in scored for i in index)
        for i, p in zip(order, rows, strict=True):
            out[i] = (p[0], p[1], p[2])
        missing = [i for i, p in enumerate(out) if p is None]
        assert not missing, f"texts {missing[:5]} got no prediction"
        return out  # type: ignore[return-value]  # every slot is filled, checked just above

    def _produce(self, texts: list[str], batches: queue.Queue[Any], stop: threading.Event) -> None:
        """The tokenizer thread: tokenize chunk by chunk, pack each full batch, hand it on."""
        try:
            token_ids: dict[int, list[int]] = {}

            def tokenized() -> Iterator[tuple[int, int]]:
                tok = self._loaded.tokenizer
                for start in range(0, len(texts), self.tokenize_chunk):
                    encoded = tok(
                        texts[start : start + self.tokenize_chunk],
                        truncation=True,
                        max_length=self.max_length,
                        return_attention_mask=False,
                        return_token_type_ids=False,
                    )["input_ids"]
                    for offset, ids in enumerate(encoded):
                        token_ids[start + offset] = ids
                        yield start + offset, len(ids)

            for index, length in self._plan(tokenized()):
                batch = self._pack(index, length, [token_ids.pop(i) for i in index])
                while not stop.is_set():
                    try:
                        batches.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            batches.put(_DONE)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            batches.put(_Failed(exc))

    def _pack(self, index: list[int], length: int, token_ids: list[list[int]]) -> _Batch:
        import torch

        fixed = bool(self.padding_buckets)
        rows = self.rows_for(length) if fixed else -(-(len(index) + self._reserve_row) // ROW_MULTIPLE) * ROW_MULTIPLE
        pin = self._on_cuda
        input_ids = torch.full((rows, length), self._pad_id, dtype=torch.int64, pin_memory=pin)
        mask = torch.zeros((rows, length), dtype=torch.int64, pin_memory=pin)
        ids_np, mask_np = input_ids.numpy(), mask.numpy()
        for row, ids in enumerate(token_ids):
            ids_np[row, : len(ids)] = ids
            mask_np[row, : len(ids)] = 1
        # Padding rows attend to one position: a fully masked row would be NaN (harmless, rows do not mix, but
        # noisy to debug).
        mask_np[len(token_ids) :, 0] = 1
        return _Batch(index, length, input_ids, mask)

    def _forward(self, batch: _Batch, device: torch.device) -> torch.Tensor:
        if self.cuda_graphs:
            key = (batch.input_ids.shape[0], batch.length)
            if key not in self._graphs:
                self._graphs[key] = _CapturedForward.capture(self._call_model, batch, device)
            graph = self._graphs[key]
            if graph is not None:
                return graph.replay(batch)
        input_ids = batch.input_ids.to(device, non_blocking=True)
        mask = batch.attention_mask.to(device, non_blocking=True)
        return self._call_model(input_ids, mask)

    def _call_model(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attention_mask = mask.bool()[:, None, None, :] if self._mask_4d else mask
        logits: torch.Tensor = self._loaded.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


class _CapturedForward:
    """One CUDA graph of the model's forward pass at one (rows, length) shape, with its static input tensors."""

    def __init__(self, graph: Any, input_ids: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor) -> None:
        self._graph = graph
        self._input_ids = input_ids
        self._mask = mask
        self._logits = logits

    @classmethod
    def capture(cls, call: Any, batch: _Batch, device: torch.device) -> _CapturedForward | None:
        """Capture ``call`` at ``batch``'s shape (after warm-up passes on a side stream, as torch requires);
        None, with the reason logged, where the model cannot be captured."""
        import torch

        input_ids = batch.input_ids.to(device)
        mask = batch.attention_mask.to(device)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    call(input_ids, mask)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the tokenizer thread keeps allocating pinned host memory while this thread captures,
            # which the default ("global") mode would count as an unsafe call inside the capture.
            with torch.cuda.graph(graph, pool=_graph_pool(), capture_error_mode="thread_local"):
                logits = call(input_ids, mask)
        except RuntimeError as exc:
            log.warning("CUDA graph capture failed at shape %s, served eagerly: %s", tuple(input_ids.shape), exc)
            return None
        return cls(graph, input_ids, mask, logits)

    def replay(self, batch: _Batch) -> torch.Tensor:
        self._input_ids.copy_(batch.input_ids, non_blocking=True)
        self._mask.copy_(batch.attention_mask, non_blocking=True)
        self._graph.replay()
        # The next replay overwrites the static output; callers take the softmax (a new tensor) before that.
        return self._logits


_POOL: list[Any] = []


def _graph_pool() -> Any:
    """One memory pool shared by every captured shape (they never run at the same time)."""
    import torch

    if not _POOL:
        _POOL.append(torch.cuda.graph_pool_handle())
    return _POOL[0]


def save_random_encoder(out: Path, *, size: str = "base", tokenizer_from: str | None = None) -> Path:
    """A randomly initialised BERT sequence classifier (3 labels) saved with a tokenizer, for speed and memory
    figures where no weights are needed: ``size="base"`` is BERT-base (12 layers, 768 wide, 110M parameters),
    ``"tiny"`` a 2-layer, 64-wide one for smoke runs on CPU. The tokenizer is all-MiniLM-L6-v2's, which is
    bert-base-uncased's vocabulary. Returns ``out``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from adapters.model.client import ID2LABEL, LABEL2ID, load_tokenizer
    from adapters.model.config import bundled_base_path

    shapes: dict[str, dict[str, Any]] = {
        "base": {},
        "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
    }
    if size not in shapes:
        raise ValueError(f"size must be one of {', '.join(shapes)}, got {size!r}")
    tokenizer = load_tokenizer(tokenizer_from or bundled_base_path())
    # num_labels is a PreTrainedConfig keyword that BertConfig's typed signature does not list.
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID, **shapes[size]
    )  # type: ignore[call-arg]
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


DEVICE_SERVING["cuda"] = GpuSentimentModel.from_loaded
