"""``sigstream replay``: run recorded streams through the engine on event time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.modes.replay import ReplayOutputs, open_sources, publish_recordings, resolve_interval, run_replay
from sigstream.settings import flag, load_settings, with_overrides

console = Console(stderr=True)


def replay(
    paths: list[Path] = typer.Argument(..., help="Recordings (.jsonl/.jsonl.gz) and/or kline or news CSVs."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only this symbol (e.g. BTCUSDT)."),
    interval: Interval | None = typer.Option(None, "--interval", help="Bar interval; default: the CSV's own."),
    news: list[Path] = typer.Option([], "--news", help="News CSV (cryptonews.csv layout) or recording."),
    features_out: Path | None = typer.Option(None, "--features-out", help="JSONL, one line per closed bar."),
    signals_out: Path | None = typer.Option(None, "--signals-out", help="JSONL of composite signals."),
    dead_letters_out: Path | None = typer.Option(
        None, "--dead-letters-out", help="JSONL of rejected lines with reason and line number."
    ),
    bars_from: str = typer.Option("klines", "--bars-from", help="klines: confirmed venue bars; trades: build bars."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    to_kafka: str | None = typer.Option(None, "--to-kafka", help="Publish onto market.raw/news.raw at this "
                                        "bootstrap instead of processing in-process."),
    speed: str | None = typer.Option(None, "--speed", help="With --to-kafka: N x real time, or max (the default)."),
    resume: bool = typer.Option(False, "--resume", help="With --to-kafka: continue an interrupted publish of the "
                                "same inputs to the same topics from the last acknowledged record: item i is "
                                "skipped on partition p iff i <= the last sigstream.seq on p."),
    max_outage_s: float | None = typer.Option(None, "--max-outage-s", min=0.001, help="With --to-kafka: give up "
                                              "(exit 1) when the broker acknowledges nothing for this many "
                                              "seconds (default 300)."),
    model_spec: str | None = typer.Option(None, "--model", help="Sentiment model as module:callable "
                                          "(default: the configured transformers model and adapter)."),
) -> None:
    """Replay recorded Bybit frames, kline CSVs and news through the engine, deterministically.

    Same input, same bytes out: time comes from the events, never the wall clock.

    With --to-kafka the records go to market.raw / news.raw instead, for `sigstream worker`. A broker
    outage is retried with backoff, losing and duplicating nothing, for up to --max-outage-s. Each
    record carries sigstream.seq, its item's index in the input. --resume (same inputs, same topics)
    reads the last record of every market.raw, news.raw and deadletter partition: item i meant for
    partition p was published iff i <= the last seq on p, so exactly those are skipped and the rest is
    published, as if the first run had not stopped. On empty topics it publishes everything.
    """
    if bars_from not in ("klines", "trades"):
        raise InvalidInput(f"--bars-from must be klines or trades, not {bars_from!r}")
    if to_kafka:
        # Publishing only moves records onto Kafka; the workers compute (and write) everything else.
        local_only = {"--features-out": features_out, "--signals-out": signals_out,
                      "--dead-letters-out": dead_letters_out, "--model": model_spec,
                      "--bars-from": bars_from if bars_from != "klines" else None,
                      "--symbol": symbol}  # fmt: skip
        given = [flag for flag, value in local_only.items() if value is not None]
        if given:
            raise InvalidInput(f"{', '.join(given)} do nothing with --to-kafka (the workers process the records)")
    elif speed is not None:
        raise InvalidInput("--speed only applies with --to-kafka (an in-process replay always runs at full speed)")
    elif resume or max_outage_s is not None:
        raise InvalidInput(f"{'--resume' if resume else '--max-outage-s'} only applies with --to-kafka")
    settings = with_overrides(load_settings(), flag("--to-kafka", to_kafka, "kafka.bootstrap"),
                              flag("--bars-from", bars_from, "engine.bars_from"))
    sources = open_sources(paths, news, symbol=symbol, interval=interval, files=settings.files)
    if to_kafka:
        publish_recordings(sources, settings, _parse_speed(speed or "max"), resume=resume, max_outage_s=max_outage_s)
        return
    settings = with_overrides(settings, flag(
        "--interval", resolve_interval(sources, interval, settings.engine.interval), "engine.interval"))
    engine_settings = settings.engine
    if model_spec:
        from sigstream.modes.sentiment import load_model

        model = load_model(model_spec)
    else:
        # torch loads only when a replay actually needs the transformers model
        from adapters.model import load_sentiment_model

        model = load_sentiment_model(settings.model)
    outputs = ReplayOutputs(features_out, signals_out, dead_letters_out)
    report, dead = asyncio.run(run_replay(sources, model, engine_settings, outputs, symbol=symbol, progress=progress))

    table = Table(title="replay", show_header=False)
    stats = report.engine
    for name, value in (
        ("events", report.events), ("bars", stats.bars), ("trades", stats.trades), ("features", report.features),
        ("news", stats.news), ("news duplicate", stats.news_duplicate), ("news without symbol", stats.news_unmapped),
        ("sentiment scores", stats.sentiment_scores), ("signals", report.signals),
        ("bars of another interval", stats.bars_other_interval),
        ("venue bars not used (--bars-from trades)", stats.bars_not_used),
        ("bars skipped: not newer than the last", stats.bars_stale), ("dead letters", report.dead_letters),
    ):
        table.add_row(name, f"{value:,}")
    console.print(table)
    unused = stats.bars_other_interval + stats.bars_not_used
    if unused and not stats.bars:
        console.print(f"[yellow]no bar was used: {stats.bars_other_interval:,} were of another interval than "
                      f"{engine_settings.interval.value} (--interval) and {stats.bars_not_used:,} were venue bars "
                      "while --bars-from trades builds bars from trades[/yellow]")
    if dead.count:
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(dead.reasons.items()))
        where = f" -> {dead_letters_out}" if dead_letters_out else " (use --dead-letters-out to keep them)"
        console.print(f"[yellow]{dead.count} dead letter(s){where}: {reasons}[/yellow]")


def _parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise InvalidInput(f"--speed must be a positive number or max, not {text!r}")
    return value


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
