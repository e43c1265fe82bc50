"""``sigstream record``: write recordings (convert kline CSVs, generate a demo)."""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from adapters.bybit.frames import kline_frame
from adapters.files.client import partial_path
from adapters.files.sink import RecordingWriter
from adapters.files.source import KlineCsvSource
from engine.errors import InvalidInput
from engine.events import Bar, Interval
from sigstream.demo import write_demo_recording

record_app = typer.Typer(help="Write recordings: JSONL(.gz) of Bybit v5 frames and news, with receive times.",
                         no_args_is_help=True)


@record_app.command("convert")
def convert(
    csv_path: Path = typer.Argument(..., help="Kline CSV: timestamp|start,open,high,low,close,volume."),
    out: Path = typer.Argument(..., help="Recording to write (.jsonl or .jsonl.gz)."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol; default: from the file name."),
    interval: Interval | None = typer.Option(None, "--interval", help="Default: inferred from timestamps."),
) -> None:
    """Convert a kline CSV into confirmed ``kline.{interval}.{symbol}`` v5 frames.

    Each frame's receive time is its bar's close time. Bad rows are reported, not written. OUT is written as
    OUT.partial and renamed when the conversion succeeds; a failure leaves no OUT (and no empty file).
    """
    _check_recording_name(out)
    source = KlineCsvSource(csv_path, symbol, interval)
    bad = 0
    try:
        with RecordingWriter(out, staged=True) as writer:
            for item in tqdm(source.items(), desc="convert", unit=" bars", disable=None):  # None: off unless a tty
                if isinstance(item, Bar):
                    writer.write_frame(kline_frame(item, source.symbol, source.interval), item.ts_event)
                else:
                    bad += 1
                    typer.echo(f"line {item.line}: {item.reason}", err=True)
    except InvalidInput as exc:
        kept = partial_path(out)
        raise InvalidInput(exc.reason + (f"; the frames before it are left in {kept}" if kept.exists() else
                                         f"; {out} was not written")) from None
    typer.echo(f"wrote {writer.count} frames of {source.symbol} {source.interval} to {out}"
               + (f"; {bad} bad row(s) skipped" if bad else ""), err=True)


@record_app.command("demo")
def demo(
    out: Path = typer.Argument(..., help="Recording to write (.jsonl or .jsonl.gz)."),
    minutes: int = typer.Option(2_880, "--minutes", min=30, help="Minutes of 1m bars per symbol."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed writes the same bytes."),
) -> None:
    """Generate a seeded demo recording (BTC and ETH 1m klines with news) for machines without data."""
    _check_recording_name(out)
    count = write_demo_recording(out, minutes=minutes, seed=seed)
    typer.echo(f"wrote {count} lines to {out}", err=True)


def _check_recording_name(out: Path) -> None:
    # replay tells a recording by its name; anything else would be written and then refused.
    if not out.name.endswith((".jsonl", ".jsonl.gz")):
        raise InvalidInput(f"{out}: a recording is named .jsonl or .jsonl.gz")
    if out.is_dir():
        raise InvalidInput(f"{out} is a directory")


def register(app: typer.Typer) -> None:
    app.add_typer(record_app, name="record")
