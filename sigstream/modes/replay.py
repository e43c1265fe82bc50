"""The ``sigstream replay`` room: files in, the runtime, JSONL out (``make run``), or files onto Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from tqdm import tqdm

from adapters.files.config import FilesSettings
from adapters.files.sink import DeadLetterFile, JsonlFeatureSink, JsonlSignalSink
from adapters.files.source import FileSource, detect_source, merge_in_time_order, pair_from_filename
from engine.batcher import MicroBatcher
from engine.config import EngineSettings
from engine.events import Interval
from engine.pipeline import SignalEngine
from engine.ports import SentimentModel
from engine.runtime import Runtime, RuntimeSinks, RuntimeStats
from sigstream.settings import Settings

console = Console(stderr=True)


@dataclass(slots=True)
class ReplayOutputs:
    """Output paths; any may be None.

    Each is written as ``<name>.partial`` and renamed to its name only when the replay succeeded; after a failure
    or an interrupt, :attr:`left_partial` lists the ``.partial`` files that hold lines (empty ones are removed).
    """

    features: Path | None = None
    signals: Path | None = None
    dead_letters: Path | None = None
    left_partial: list[Path] = field(default_factory=list)


def open_sources(
    paths: Sequence[Path], news: Sequence[Path], *, symbol: str | None, interval: Interval | None,
    files: FilesSettings,
) -> list[FileSource]:
    """Sources for ``paths``; ``symbol`` filters (the engine drops other symbols) and names only files whose
    name does not say their symbol, so ``--symbol BTCUSDT`` never relabels ETHUSDT_1m.csv as BTC."""
    return [
        detect_source(p, symbol=None if pair_from_filename(p) else symbol, interval=interval, settings=files)
        for p in [*paths, *news]
    ]


def resolve_interval(sources: Sequence[FileSource], requested: Interval | None, fallback: Interval) -> Interval:
    """The CLI's --interval, else the first kline CSV's own interval, else the settings default."""
    if requested is not None:
        return requested
    for source in sources:
        interval = getattr(source, "interval", None)
        if isinstance(interval, Interval):
            return interval
    return fallback


async def run_replay(
    sources: Sequence[FileSource],
    model: SentimentModel,
    settings: EngineSettings,
    outputs: ReplayOutputs,
    *,
    symbol: str | None = None,
    progress: bool = True,
    check: Callable[[RuntimeStats], None] | None = None,
) -> tuple[RuntimeStats, DeadLetterFile]:
    """Replay ``sources`` through the engine and write the requested outputs.

    ``check`` sees the finished run's report before the outputs get their names; raising there (like any failure
    or an interrupt during the run) leaves them as ``.partial`` files, listed in ``outputs.left_partial``.
    """
    engine = SignalEngine(settings, symbols=frozenset({symbol.upper()}) if symbol else None)
    batcher = MicroBatcher(model, settings.batcher)
    dead = DeadLetterFile(outputs.dead_letters, staged=True)
    feature_sinks = [JsonlFeatureSink(outputs.features, staged=True)] if outputs.features else []
    signal_sinks = [JsonlSignalSink(outputs.signals, staged=True)] if outputs.signals else []
    sinks = RuntimeSinks(dead, feature_sinks, signal_sinks)
    # disable=None: no bar when stderr is not a terminal, so a log or a failure's one line stays clean.
    bar = tqdm(desc="replay", unit=" events", disable=None if progress else True, mininterval=0.5)
    committed = False
    try:
        runtime = Runtime(engine, batcher, sinks, on_progress=bar.update)
        report = await runtime.run(merge_in_time_order(sources))
        if check is not None:
            check(report)
        committed = True
    finally:
        bar.close()
        await sinks.close()
        staged: list[JsonlFeatureSink | JsonlSignalSink | DeadLetterFile] = [*feature_sinks, *signal_sinks, dead]
        for output in staged:
            if committed:
                output.commit()
            elif (kept := output.discard()) is not None:
                outputs.left_partial.append(kept)
    return report, dead


def publish_recordings(sources: list, settings: Settings, speed: float | None, *, resume: bool = False,
             max_outage_s: float | None = None) -> None:
    from sigstream.modes.publish import publish_items

    kafka = settings.kafka
    report = asyncio.run(publish_items(merge_in_time_order(sources), kafka, speed, max_outage_s=max_outage_s,
                                       resume=resume))
    if resume:
        console.print(f"resume: {report.already_published:,} items already on the topics were skipped "
                      f"({report.already_published_records:,} records)", soft_wrap=True, markup=False)
    console.print(f"published to {kafka.bootstrap}: {report.line()}", soft_wrap=True, markup=False)
