"""``sigstream bench``: throughput figures for the hot paths (printed, never asserted)."""

from __future__ import annotations

import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from engine.errors import InvalidInput
from sigstream.modes import bench as benchmarks

console = Console(stderr=True)


def bench(
    bars: int = typer.Option(200_000, "--bars", min=1_000, help="Bars through the feature path."),
    trades: int = typer.Option(1_000_000, "--trades", min=1_000, help="Trades through bar building."),
    texts: int = typer.Option(400, "--texts", min=0, help="Labelled texts for the sentiment comparison (0 skips)."),
    data: str = typer.Option("fpb:50:test", "--data", help="Labelled data spec for the sentiment texts."),
    kafka: str | None = typer.Option(None, "--kafka", help="Also measure end-to-end through this Kafka broker."),
    kafka_model: str = typer.Option(
        "adapters.model.classifier:load_sentiment_model",
        "--kafka-model",
        help="The worker's sentiment model, module:factory (the lexicon test model isolates the Kafka path).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON on stdout."),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu: the figures above. cuda: the GPU serving figures instead (texts/s end to end for the chapter's "
        "loop, HF pipeline, sigstream bf16 and 4-bit, on MiniLM and a random BERT-base; GPU memory; p50/p99 of a "
        "64-text micro-batch). Needs an NVIDIA GPU: without one it exits 2. E.g. sigstream bench --device cuda --json",
    ),
    gpu_texts: int = typer.Option(20_000, "--gpu-texts", min=1, help="--device cuda: texts through each path."),
    training_memory: bool = typer.Option(
        False,
        "--training-memory",
        help="--device cuda: instead of serving, peak GPU memory and time per step of LoRA, 16-bit LoRA, QLoRA "
        "(also with gradient checkpointing) and full fine-tuning on MiniLM and a random BERT-base, same batch (32) "
        "and length (128).",
    ),
    cpu_smoke: bool = typer.Option(
        False,
        "--cpu-smoke",
        help="Run the --device cuda code on CPU at toy sizes, to test it (and scripts/gpu-check.sh --dry-run) "
        "without a GPU; its figures mean nothing.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Also write the JSON here, rewritten after each row (a killed run keeps its rows)."
    ),
) -> None:
    """Measure bars/s through features, trades/s through bar building, and batched vs one-at-a-time
    sentiment texts/s with the weighted-F1 cost of each speed-up. With --kafka, end-to-end figures too.
    With --device cuda, the GPU serving figures (or, with --training-memory, the training-memory table)."""
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    if device not in {"cpu", "cuda"}:
        raise InvalidInput(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" or cpu_smoke or training_memory:
        _gpu(result, device="cpu" if cpu_smoke else "cuda", texts=gpu_texts, data=data,
             training_memory=training_memory, smoke=cpu_smoke, out=out)  # fmt: skip
        if as_json:
            typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        _print_gpu(result)
        return
    with console.status("features..."):
        result["features"] = benchmarks.bench_features(bars)
    with console.status("bar building..."):
        result["bar_building"] = benchmarks.bench_bar_building(trades)
    if texts:
        result["sentiment"] = _sentiment(texts, data)
    if kafka:
        from sigstream.settings import load_settings
        from testkit.kafka_bench import run_kafka_bench

        security = load_settings().kafka  # SASL / TLS from SIGSTREAM_KAFKA__...
        with console.status("kafka end to end (about a minute)..."):
            result["kafka"] = asyncio.run(run_kafka_bench(kafka, model=kafka_model, security=security))
    if as_json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if out is not None:
        _write(out, result)
    _print(result)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


def _gpu(
    result: dict[str, Any], *, device: str, texts: int, data: str, training_memory: bool, smoke: bool,
    out: Path | None,
) -> None:
    """Fill ``result`` with the GPU figures (sigstream.modes.bench, sigstream.modes.train.memory)."""
    import tempfile

    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(
            "--device cuda: torch sees no CUDA device here (the GPU figures need an NVIDIA GPU; "
            "--cpu-smoke runs their code on CPU)"
        )
    from sigstream.settings import load_settings

    result.update(
        device=device,
        gpu=torch.cuda.get_device_name(0) if device == "cuda" else None,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        smoke=smoke,
    )
    rows: list[dict[str, Any]] = []

    def on_row(row: dict[str, Any]) -> None:
        rows.append(row)
        if out is not None:
            _write(out, {**result, "rows_so_far": rows})

    with tempfile.TemporaryDirectory(prefix="sigstream-bench-") as work:
        if training_memory:
            from sigstream.modes.train import memory

            sizes = memory.SMOKE_MEMORY_SIZES if smoke else memory.MemorySizes()
            result.update(memory.training_memory_table(device=device, sizes=sizes, work_dir=Path(work),
                                                       on_row=on_row))  # fmt: skip
        else:
            gpu_sizes = benchmarks.SMOKE_SIZES if smoke else benchmarks.GpuBenchSizes(texts=texts)
            result.update(
                benchmarks.bench_gpu_serving(
                    load_settings().model, device=device, sizes=gpu_sizes, data=data, work_dir=Path(work),
                    on_row=on_row,
                )
            )
    if out is not None:
        _write(out, result)


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} MB"


def _print_gpu(result: dict[str, Any]) -> None:
    where = result.get("gpu") or f"{result['device']} (smoke run: figures mean nothing)"
    table = Table(title=f"sigstream bench --device cuda — {result['date']} — {where}")
    if "training_memory" in result:
        for column in ("encoder", "method", "peak memory", "weights", "time/step", "trainable"):
            table.add_column(column, justify="left" if column in {"encoder", "method"} else "right")
        for row in result["training_memory"]:
            if "error" in row:
                table.add_row(row["encoder"], row["method"], "error", row["error"][:60], "", "")
                continue
            table.add_row(row["encoder"], row["method"], _mb(row["peak_mb"]), _mb(row["weights_mb"]),
                          f"{row['ms_per_step']:,.1f} ms", f"{row['trainable_params']:,}")  # fmt: skip
    else:
        for column in ("encoder", "path", "texts/s", "p50 / p99 (64 texts)", "peak memory", "texts"):
            table.add_column(column, justify="left" if column in {"encoder", "path"} else "right")
        for row in result.get("serving", []):
            if "error" in row:
                table.add_row(row["encoder"], row["path"], "error", row["error"][:60], "", "")
                continue
            latency = (f"{row['latency_ms_p50']:.1f} / {row['latency_ms_p99']:.1f} ms"
                       if "latency_ms_p50" in row else "")  # fmt: skip
            table.add_row(row["encoder"], row["path"], f"{row['texts_per_s']:,.0f}", latency,
                          _mb(row["peak_mb"]), f"{row['texts']:,}")  # fmt: skip
    console.print(table)


def _sentiment(count: int, spec: str) -> list[dict[str, Any]]:
    from adapters.datasets.loader import load_spec
    from adapters.model import TransformersSentimentModel
    from adapters.model.client import cpu_has_native_bf16
    from sigstream.settings import load_settings

    labelled = load_spec(spec)
    examples = labelled.examples[:count]
    settings = load_settings().model
    # What quantize=auto picks on a CPU (adapters.model.client.resolve_quantize) is marked as the default.
    bf16_default = cpu_has_native_bf16()
    bf16 = settings.model_copy(update={"quantize": "none", "dtype": "bfloat16"})
    with console.status("loading models..."):
        variants = {
            "baseline (1 text/forward, fp32)": TransformersSentimentModel.baseline(settings),
            "batched fp32, padding buckets": TransformersSentimentModel.optimized(
                settings.model_copy(update={"quantize": "none", "dtype": "float32"})
            ),
            "batched + int8 dynamic (batch-dependent)" + ("" if bf16_default else " (default)"): (
                TransformersSentimentModel.optimized(settings.model_copy(update={"quantize": "int8-dynamic"}))
            ),
            "batched bf16, padding buckets" + (" (default)" if bf16_default else " (no native bf16 here)"): (
                TransformersSentimentModel.optimized(bf16)
            ),
            # What batch invariance costs: the same bf16 weights, each batch padded to its longest text.
            "batched bf16, free padding (batch-dependent)": TransformersSentimentModel.optimized(
                bf16.model_copy(update={"padding_buckets": ()})
            ),
        }
    with console.status(f"sentiment on {len(examples)} texts..."):
        return benchmarks.bench_sentiment([e.text for e in examples], [e.label for e in examples], variants)


def _print(result: dict[str, Any]) -> None:
    table = Table(title=f"sigstream bench — {result['date']} — {result['machine']}")
    table.add_column("path")
    table.add_column("throughput", justify="right")
    table.add_column("vs baseline", justify="right")
    table.add_column("weighted F1", justify="right")
    table.add_row("features", f"{result['features']['bars_per_s']:,.0f} bars/s", "", "")
    table.add_row("bar building", f"{result['bar_building']['trades_per_s']:,.0f} trades/s", "", "")
    for row in result.get("sentiment", []):
        table.add_row(
            f"sentiment: {row['variant']}",
            f"{row['texts_per_s']:,.1f} texts/s",
            f"{row['speedup']:.2f}x",
            f"{row['weighted_f1']:.4f}",
        )
    for key, value in result.get("kafka", {}).items():
        # Counts (frames, news sent) are integers and print as such; rates and latencies keep one decimal.
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            table.add_row(f"kafka: {key}", f"{value:,}", "", "")
        elif isinstance(value, float):
            table.add_row(f"kafka: {key}", f"{value:,.1f}", "", "")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
