"""``sigstream bench``: throughput figures for the hot paths (printed, never asserted)."""

from __future__ import annotations

import asyncio
import os
import platform
from datetime import UTC, datetime
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

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
) -> None:
    """Measure bars/s through features, trades/s through bar building, and batched vs one-at-a-time
    sentiment texts/s with the weighted-F1 cost of each speed-up. With --kafka, end-to-end figures too."""
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    with console.status("features..."):
        result["features"] = benchmarks.bench_features(bars)
    with console.status("bar building..."):
        result["bar_building"] = benchmarks.bench_bar_building(trades)
    if texts:
        result["sentiment"] = _sentiment(texts, data)
    if kafka:
        from testkit.kafka_bench import run_kafka_bench

        with console.status("kafka end to end (about a minute)..."):
            result["kafka"] = asyncio.run(run_kafka_bench(kafka, model=kafka_model))
    if as_json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    _print(result)


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
        if isinstance(value, int | float):
            table.add_row(f"kafka: {key}", f"{value:,.1f}", "", "")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
