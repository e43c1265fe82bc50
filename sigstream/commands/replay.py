"""``sigstream replay``: run recorded streams through the engine on event time."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adapters.files.sink import DeadLetterFile
from adapters.files.source import FileSource, KlineCsvSource, NewsCsvSource
from engine.errors import FatalError, InvalidInput
from engine.events import Interval
from engine.runtime import RuntimeStats
from sigstream.modes.replay import ReplayOutputs, open_sources, publish_recordings, resolve_interval, run_replay
from sigstream.modes.sentiment import LazySentimentModel, with_model_flag
from sigstream.settings import Settings, check_bootstrap, flag, load_settings, with_overrides

console = Console(stderr=True)
out = Console()  # the summary table is the command's result: stdout; warnings and progress go to stderr


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
    model_spec: str | None = typer.Option(None, "--model", help="Sentiment model: an adapter folder or full "
                                          "model (path or hub id), or module:callable [default: the configured "
                                          "model and adapter]. Loaded at the first news item only."),
    allow_truncated: bool = typer.Option(False, "--allow-truncated", help="Accept a .gz recording cut short (a "
                                         "killed `run --record`): replay it up to the cut and exit 0."),
) -> None:
    """Replay recorded Bybit frames, kline CSVs and news through the engine, deterministically.

    Same input, same bytes out: time comes from the events, never the wall clock.

    With --to-kafka the records go to market.raw / news.raw instead, for `sigstream worker`. A broker
    outage is retried with backoff, losing and duplicating nothing, for up to --max-outage-s. Each
    record carries sigstream.seq, its item's index in the input. --resume (same inputs, same topics)
    reads the last record of every market.raw, news.raw and deadletter partition: item i meant for
    partition p was published iff i <= the last seq on p, so exactly those are skipped and the rest is
    published, as if the first run had not stopped. On empty topics it publishes everything.

    Outputs are written as NAME.partial and renamed to NAME when the replay succeeds; after an error or
    Ctrl-C (exit 130) the .partial files stay and the last line names them.
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
    if symbol:
        _check_symbol_in_files(sources, symbol)
    if to_kafka:
        check_bootstrap("--to-kafka", settings.kafka.bootstrap)
        publish_recordings(sources, settings, _parse_speed(speed or "max"), resume=resume, max_outage_s=max_outage_s)
        return
    settings = with_overrides(settings, flag(
        "--interval", resolve_interval(sources, interval, settings.engine.interval), "engine.interval"))
    outputs = ReplayOutputs(features_out, signals_out, dead_letters_out)
    settings, spec = with_model_flag(settings, model_spec)
    try:
        report, dead = _replay_in_process(sources, settings, spec, outputs, symbol=symbol, progress=progress,
                                          allow_truncated=allow_truncated)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {_partial_note(outputs)}", err=True)
        raise SystemExit(130) from None
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.reason}; {_partial_note(outputs)}") from None
    except FatalError as exc:
        raise FatalError(f"{exc}; {_partial_note(outputs)}") from None
    _print_summary(report, dead, settings.engine.interval, dead_letters_out)


def _replay_in_process(
    sources: list[FileSource], settings: Settings, spec: str, outputs: ReplayOutputs, *, symbol: str | None,
    progress: bool, allow_truncated: bool,
) -> tuple[RuntimeStats, DeadLetterFile]:
    # The model (torch, the transformer) loads at the first news item: a replay of klines alone never loads it.
    model = LazySentimentModel(spec, settings.model)

    def check(report: RuntimeStats) -> None:
        cut = next((c for s in sources if (c := getattr(s, "truncated", None)) is not None), None)
        if cut is not None and not allow_truncated:
            raise InvalidInput(f"{cut.reason}; --allow-truncated replays it up to the cut")
        if symbol and not report.engine.bars and not report.signals:
            raise InvalidInput(f"--symbol {symbol}: no bar or signal of {symbol.upper()} in the inputs "
                               f"({report.events:,} events of other symbols); symbols are spelled as Bybit does, "
                               "e.g. BTCUSDT")

    # Ctrl-C must stop even a replay that never waits (klines alone): asyncio's own handler only cancels the task
    # at its next wait, so this one raises at once; the outputs are then closed and left as .partial.
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        return asyncio.run(run_replay(sources, model, settings.engine, outputs, symbol=symbol, progress=progress,
                                      check=check))
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_summary(report: RuntimeStats, dead: DeadLetterFile, interval: Interval, dead_letters_out: Path | None,
                   ) -> None:
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
    out.print(table)
    unused = stats.bars_other_interval + stats.bars_not_used
    if unused and not stats.bars:
        console.print(f"[yellow]no bar was used: {stats.bars_other_interval:,} were of another interval than "
                      f"{interval.value} (--interval) and {stats.bars_not_used:,} were venue bars "
                      "while --bars-from trades builds bars from trades[/yellow]")
    if dead.count:
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(dead.reasons.items()))
        where = f" -> {dead_letters_out}" if dead_letters_out else " (use --dead-letters-out to keep them)"
        console.print(f"[yellow]{dead.count} dead letter(s){where}: {reasons}[/yellow]")


def _check_symbol_in_files(sources: list[FileSource], symbol: str) -> None:
    """--symbol that none of the kline CSVs holds fails before the replay (recordings are checked after it)."""
    market = [s for s in sources if not isinstance(s, NewsCsvSource)]
    if market and all(isinstance(s, KlineCsvSource) for s in market):
        held = sorted({s.symbol for s in market if isinstance(s, KlineCsvSource)})
        if symbol.upper() not in held:
            raise InvalidInput(f"--symbol {symbol}: the kline files hold {', '.join(held)} only")


def _partial_note(outputs: ReplayOutputs) -> str:
    if not outputs.left_partial:
        return "no output was written"
    return "outputs are partial, left as " + ", ".join(str(p) for p in outputs.left_partial)


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
