"""``sigstream backtest``: trade the engine's composite signals on recorded prices and news."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adapters.bybit.frames import to_epoch_ms
from engine.backtest import BacktestSettings
from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.modes.backtest import (
    open_backtest_sources,
    report_dict,
    report_json,
    run_backtest_files,
    summary_rows,
    write_report,
)
from sigstream.settings import flag, load_settings, validated, with_overrides

console = Console(stderr=True)


def _time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return to_epoch_ms(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{option}: {exc.reason}") from None


def backtest(
    prices: Path = typer.Option(..., "--prices", help="Kline CSV or recording (.jsonl[.gz]) with the bars."),
    news: Path = typer.Option(..., "--news", help="News CSV (cryptonews.csv layout) or recording."),
    symbol: str = typer.Option(..., "--symbol", help="Symbol to trade, e.g. BTCUSDT."),
    interval: Interval = typer.Option(Interval.D1, "--interval", help="Bar interval of the prices."),
    initial_capital: float = typer.Option(100_000.0, "--initial-capital", help="Starting equity."),
    position_size: float = typer.Option(0.1, "--position-size", help="Position as a fraction of equity (0-1]."),
    confidence_threshold: float = typer.Option(
        0.7, "--confidence-threshold", help="Signals at or above this confidence trade (sets the aggregator's)."
    ),
    fee_bps: float = typer.Option(5.0, "--fee-bps", help="Fee per fill, basis points of notional."),
    slippage_bps: float = typer.Option(2.0, "--slippage-bps", help="Fill this far beyond the next open."),
    short: bool = typer.Option(False, "--short/--no-short", help="SELL goes short, or only flattens."),
    start: str | None = typer.Option(None, "--start", help="First bar to trade (ISO-8601, UTC if naive)."),
    end: str | None = typer.Option(None, "--end", help="Last bar close to trade (ISO-8601, UTC if naive)."),
    report: Path | None = typer.Option(
        None, "--report", help="Write report.json, trades.csv, fills.csv, equity.png and summary.md here."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report JSON to stdout."),
    dead_letters_out: Path | None = typer.Option(
        None, "--dead-letters-out", help="JSONL of rejected records with reason and line number."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Backtest the composite signals: decide at each bar close, fill at the next bar's open.

    The same engine code as live and replay makes every decision, on event time; fees and slippage
    are charged on every fill, and buy-and-hold over the same bars is the benchmark.
    """
    settings = with_overrides(
        load_settings(),
        flag("--interval", interval, "engine.interval"),
        flag("--confidence-threshold", confidence_threshold, "engine.aggregator.threshold"),
    )
    symbol = symbol.strip().upper()
    start_ms, end_ms = _time_option(start, "--start"), _time_option(end, "--end")
    account = validated(
        BacktestSettings,
        initial_capital=initial_capital,
        position_size=position_size,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        allow_short=short,
    )
    sources = open_backtest_sources(prices, news, symbol=symbol, interval=interval, files=settings.files)

    from adapters.model import load_sentiment_model  # torch loads only once the inputs are known good

    model = load_sentiment_model(settings.model)
    result = asyncio.run(
        run_backtest_files(
            sources,
            model,
            settings.engine,
            account,
            symbol=symbol,
            start_ms=start_ms,
            end_ms=end_ms,
            dead_letters=dead_letters_out,
            progress=progress,
        )
    )
    out = report_dict(result, getattr(model, "description", type(model).__name__))
    if report is not None:
        written = write_report(result, out, report)
        console.print(f"report: {', '.join(str(p) for p in written)}")
    if json_out:
        sys.stdout.write(report_json(out).decode())
    else:
        table = Table(title=f"backtest {symbol} {out['start']} .. {out['end']} ({out['bars']} bars)")
        for column in ("metric", "strategy", "buy and hold"):
            table.add_column(column)
        for row in summary_rows(out):
            table.add_row(*row)
        console.print(table)
    data = out["data"]
    if data["dead_letters"] or data["bars_missing"]:
        console.print(
            f"[yellow]input: {data['dead_letters']} dead letter(s) {data['dead_letter_reasons']}, "
            f"{data['bars_missing']} missing bar(s) in {data['gaps']} gap(s)[/yellow]"
        )


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
