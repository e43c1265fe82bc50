"""``sigstream backtest``: trade the engine's composite signals on recorded prices and news."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from adapters.bybit.frames import to_epoch_ms
from engine.backtest import BacktestSettings
from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.settings import Settings, flag, load_settings, validated, with_overrides

console = Console(stderr=True)
stdout = Console()  # the result tables; the JSON of --json takes their place, diagnostics stay on stderr


def _time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return to_epoch_ms(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{option}: {exc.reason}") from None


def backtest(
    prices: list[Path] = typer.Option(
        ..., "--prices", help="Kline CSV or recording (.jsonl[.gz]) with the bars; repeat it for more symbols "
        "(files named like BTCUSDT_1d.csv)."
    ),
    news: Path = typer.Option(..., "--news", help="News CSV (cryptonews.csv layout) or recording."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol to trade, e.g. BTCUSDT (one-symbol run)."),
    symbols: str | None = typer.Option(
        None, "--symbols", help="Comma-separated symbols for a study (one --prices file each), e.g. BTCUSDT,ETHUSDT."
    ),
    policies: str | None = typer.Option(
        None, "--policies", help="Policies side by side (a study): buy_and_hold,sentiment,features,composite,direction."
    ),
    policy: str | None = typer.Option(
        None, "--policy", help="The one policy of a one-symbol run (default: engine.policy.name, i.e. sentiment)."
    ),
    policy_model: Path | None = typer.Option(
        None, "--policy-model", help="Trained direction model folder; without it a study trains the direction "
        "model walk-forward, each fold only on data before it."
    ),
    folds: int = typer.Option(4, "--folds", help="Walk-forward folds of a study's period."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples for the Sharpe intervals."),
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
    """Backtest the signals: decide at each bar close, fill at the next bar's open.

    The same engine code as live and replay makes every decision, on event time; fees and slippage
    are charged on every fill, and buy-and-hold over the same bars is the benchmark.

    A study (--symbols or --policies) runs every policy on every symbol over walk-forward folds of the news
    period and writes report.json, summary.md, trades.csv and SYMBOL.png:

    sigstream backtest --prices BTCUSDT_1d.csv --prices ETHUSDT_1d.csv --news cryptonews.csv
    --symbols BTCUSDT,ETHUSDT --interval 1d --policies buy_and_hold,sentiment,features,composite,direction
    --report out/study --json
    """
    # The room (numpy and the study) loads here, not when the CLI starts: `sigstream replay` must start fast.
    from sigstream.modes.backtest import (
        open_backtest_sources,
        parse_policies,
        report_dict,
        report_json,
        run_backtest_files,
        summary_rows,
        write_report,
    )

    settings = with_overrides(
        load_settings(),
        flag("--interval", interval, "engine.interval"),
        flag("--confidence-threshold", confidence_threshold, "engine.aggregator.threshold"),
        flag("--policy", policy, "engine.policy.name"),
        flag("--policy-model", None if policy_model is None else str(policy_model), "engine.policy.model_dir"),
    )
    start_ms, end_ms = _time_option(start, "--start"), _time_option(end, "--end")
    account = validated(
        BacktestSettings,
        initial_capital=initial_capital,
        position_size=position_size,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        allow_short=short,
    )
    walk_forward_direction = policy == "direction" and policy_model is None
    if symbols is not None or policies is not None or walk_forward_direction:
        names = [s.strip().upper() for s in (symbols or symbol or "").split(",") if s.strip()]
        if not names:
            raise InvalidInput("--symbols: name at least one symbol")
        chosen = parse_policies(policies or policy or settings.engine.policy.name)
        _study(prices, news, names, chosen, settings, account, start_ms=start_ms, end_ms=end_ms, folds=folds,
               resamples=bootstrap, policy_model=policy_model, report=report, json_out=json_out, progress=progress)
        return
    if symbol is None:
        raise InvalidInput("--symbol: name the symbol to trade (or --symbols for a study)")
    if len(prices) != 1:
        raise InvalidInput(f"--prices: a one-symbol run takes one file, got {len(prices)} (use --symbols for more)")
    symbol = symbol.strip().upper()
    sources = open_backtest_sources(prices[0], news, symbol=symbol, interval=interval, files=settings.files)

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
        stdout.print(table)
    data = out["data"]
    if data["dead_letters"] or data["bars_missing"]:
        console.print(
            f"[yellow]input: {data['dead_letters']} dead letter(s) {data['dead_letter_reasons']}, "
            f"{data['bars_missing']} missing bar(s) in {data['gaps']} gap(s)[/yellow]"
        )


def _study(
    prices: list[Path],
    news: Path,
    symbols: list[str],
    policies: list[str],
    settings: Settings,
    account: BacktestSettings,
    *,
    report: Path | None,
    json_out: bool,
    **options: Any,
) -> None:
    from sigstream.modes.backtest import STUDY_COLUMNS, report_json, run_study, study_rows

    out, written = run_study(prices, news, symbols, policies, settings, account, report=report, **options)
    if written:
        console.print(f"report: {', '.join(str(p) for p in written)}")
    if json_out:
        sys.stdout.write(report_json(out).decode())
        return
    for symbol, by_policy in out["results"].items():
        table = Table(title=f"{symbol} {out['start']} .. {out['end']}")
        for column in STUDY_COLUMNS:
            table.add_column(column)
        for row in study_rows(by_policy):
            table.add_row(*row)
        stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
