"""Wiring for ``sigstream backtest``: files in, the engine's replay loop, a report folder out."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from tqdm import tqdm

from adapters.files.config import FilesSettings
from adapters.files.sink import DeadLetterFile
from adapters.files.source import (
    FileSource,
    KlineCsvSource,
    NewsCsvSource,
    detect_source,
    infer_interval,
    merge_in_time_order,
    pair_from_filename,
)
from engine.backtest import BacktestResult, BacktestSettings, run_backtest
from engine.backtest.metrics import drawdown_series
from engine.batcher import MicroBatcher
from engine.config import AggregatorSettings, EngineSettings
from engine.errors import InvalidInput
from engine.events import Interval
from engine.pipeline import SignalEngine
from engine.ports import SentimentModel


def engine_settings_for(base: EngineSettings, interval: Interval, threshold: float) -> EngineSettings:
    """The engine settings with the backtest's interval and confidence threshold."""
    aggregator = base.aggregator.model_dump()
    aggregator["threshold"] = threshold
    try:
        checked = AggregatorSettings(**aggregator)
    except ValidationError as exc:
        raise InvalidInput(f"--confidence-threshold: {exc.errors()[0]['msg']} (got {threshold!r})") from None
    return base.model_copy(update={"interval": interval, "aggregator": checked})


def open_backtest_sources(
    prices: Path, news: Path, *, symbol: str, interval: Interval, files: FilesSettings
) -> list[FileSource]:
    """The price and news sources, checked for being what their options say they are."""
    for path, option in ((prices, "--prices"), (news, "--news")):
        if not path.is_file():
            raise InvalidInput(f"{option} {path}: no such file")
    price_source = detect_source(prices, symbol=symbol, interval=interval, settings=files)
    if isinstance(price_source, NewsCsvSource):
        raise InvalidInput(f"--prices {prices} is a news CSV, not prices")
    if isinstance(price_source, KlineCsvSource):
        _check_kline_file(prices, symbol, interval)
    news_source = detect_source(news, symbol=symbol, interval=interval, settings=files)
    if isinstance(news_source, KlineCsvSource):
        raise InvalidInput(f"--news {news} is a kline CSV, not news")
    # Prices first: a bar and a news item at the same instant keep that order (the aggregator
    # excludes news published exactly at a bar close from that bar's decision either way).
    return [price_source, news_source]


def _check_kline_file(path: Path, symbol: str, interval: Interval) -> None:
    named = pair_from_filename(path)
    if named is not None and named != symbol:
        raise InvalidInput(f"--prices {path.name} looks like {named} but --symbol is {symbol}")
    try:
        own = infer_interval(path)
    except InvalidInput:
        return  # too few rows to tell; the backtester still rejects overlapping bars
    if own != interval:
        raise InvalidInput(
            f"--prices {path.name} holds {own.value} bars but --interval is {interval.value}; "
            f"pass --interval {own.value}"
        )


async def run_backtest_files(
    sources: Sequence[FileSource],
    model: SentimentModel,
    engine_settings: EngineSettings,
    settings: BacktestSettings,
    *,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    dead_letters: Path | None = None,
    progress: bool = True,
) -> BacktestResult:
    """Backtest ``symbol`` over ``sources`` with the same engine code that runs live."""
    engine = SignalEngine(engine_settings, symbols=frozenset({symbol}))
    batcher = MicroBatcher(model, engine_settings.batcher)
    dead = DeadLetterFile(dead_letters)
    bar = tqdm(desc="backtest", unit=" events", disable=not progress, mininterval=0.5)
    try:
        return await run_backtest(
            merge_in_time_order(sources),
            engine,
            batcher,
            settings,
            dead,
            symbol=symbol,
            start_ms=start_ms,
            end_ms=end_ms,
            on_progress=bar.update,
        )
    finally:
        bar.close()
        await dead.close()


# -- the report folder ---------------------------------------------------------------------------
def iso(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def report_dict(result: BacktestResult, model: str | None = None) -> dict[str, Any]:
    """The report JSON: :meth:`BacktestResult.to_dict` plus ISO-8601 times (UTC)."""
    report = result.to_dict()
    report["start"] = iso(report["start_ts"])
    report["end"] = iso(report["end_ts"])
    if model is not None:
        report["model"] = model
    return report


def report_json(report: dict[str, Any]) -> bytes:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def write_report(result: BacktestResult, report: dict[str, Any], folder: Path) -> list[Path]:
    """report.json, trades.csv, fills.csv, equity.png and summary.md in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in ("report.json", "trades.csv", "fills.csv", "equity.png", "summary.md")]
    paths[0].write_bytes(report_json(report))
    write_trades_csv(result, paths[1])
    write_fills_csv(result, paths[2])
    plot_equity(result, paths[3])
    paths[4].write_text(summary_markdown(report, paths[3].name), encoding="utf-8")
    return paths


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "trade",
                "direction",
                "status",
                "quantity",
                "entry_decided",
                "entry_time",
                "entry_price",
                "exit_decided",
                "exit_time",
                "exit_price",
                "bars_held",
                "fees",
                "pnl",
                "return",
            ]
        )
        for number, t in enumerate(result.trades, start=1):
            writer.writerow(
                [
                    number,
                    t.direction,
                    t.status,
                    f"{t.quantity:.8f}",
                    iso(t.entry_decided_at),
                    iso(t.entry_ts),
                    f"{t.entry_price:.8g}",
                    iso(t.exit_decided_at),
                    iso(t.exit_ts),
                    f"{t.exit_price:.8g}",
                    t.bars_held,
                    f"{t.fees:.6f}",
                    f"{t.pnl:.6f}",
                    f"{t.return_pct:.6f}",
                ]
            )


def write_fills_csv(result: BacktestResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["decided", "filled", "side", "quantity", "open", "price", "notional", "fee", "slippage", "position_after"]
        )
        for f in result.fills:
            writer.writerow(
                [
                    iso(f.decided_at),
                    iso(f.ts),
                    f.side,
                    f"{f.quantity:.8f}",
                    f"{f.reference_price:.8g}",
                    f"{f.price:.8g}",
                    f"{f.notional:.6f}",
                    f"{f.fee:.6f}",
                    f"{f.slippage:.6f}",
                    f"{f.position_after:.8f}",
                ]
            )


def plot_equity(result: BacktestResult, path: Path) -> None:
    """Equity against buy-and-hold, and both drawdowns, as a small PNG."""
    # Plotting is loaded only when a report is written.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(p.ts / 1000, tz=UTC) for p in result.points]
    equity = [p.equity for p in result.points]
    benchmark = [p.benchmark for p in result.points]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 4.8), dpi=90, sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    try:
        top.plot(times, equity, label="strategy", color="tab:blue", linewidth=1.2)
        top.plot(times, benchmark, label="buy and hold", color="tab:gray", linewidth=1.0)
        top.set_ylabel("equity")
        top.set_title(f"{result.symbol} {result.interval.value}: composite-signal strategy vs buy and hold")
        top.legend(loc="best", fontsize=8)
        top.grid(alpha=0.3)
        bottom.fill_between(
            times, [-100 * d for d in drawdown_series(equity)], color="tab:blue", alpha=0.4, label="strategy"
        )
        bottom.plot(
            times, [-100 * d for d in drawdown_series(benchmark)], color="tab:gray", linewidth=1.0, label="buy and hold"
        )
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, strategy, buy-and-hold) rows shared by the summary and the terminal table."""
    s, b = report["strategy"], report["benchmark"]
    return [
        ("Final equity", _num(s["final_equity"]), _num(b["final_equity"])),
        ("Total return", _pct(s["total_return"]), _pct(b["total_return"])),
        ("CAGR", _pct(s["cagr"]), _pct(b["cagr"])),
        ("Annualised volatility", _pct(s["annualised_volatility"]), _pct(b["annualised_volatility"])),
        ("Sharpe", _num(s["sharpe"]), _num(b["sharpe"])),
        ("Sortino", _num(s["sortino"]), _num(b["sortino"])),
        ("Max drawdown", _pct(s["max_drawdown"]), _pct(b["max_drawdown"])),
        ("Max drawdown duration (bars)", str(s["max_drawdown_duration_bars"]), str(b["max_drawdown_duration_bars"])),
        ("Trades (closed / open)", f"{s['trades']} / {s['open_trades']}", "0 / 1"),
        ("Win rate", _pct(s["win_rate"]), ""),
        ("Profit factor", _num(s["profit_factor"]), ""),
        ("Turnover (x mean equity)", _num(s["turnover"]), ""),
        ("Exposure (share of bars in market)", _pct(s["exposure"]), "100.00%"),
        ("Fees paid", _num(s["fees_paid"]), ""),
        ("Slippage paid", _num(s["slippage_paid"]), ""),
    ]


def summary_markdown(report: dict[str, Any], image: str | None = None) -> str:
    settings, data, signals = report["settings"], report["data"], report["signals"]
    lines = [
        f"# Backtest: {report['symbol']} {report['interval']}",
        "",
        f"{report['start']} to {report['end']} ({report['bars']} bars). Capital {settings['initial_capital']:,.0f}, "
        f"position {100 * settings['position_size']:g}% of equity, confidence threshold "
        f"{settings['confidence_threshold']:g}, fees {settings['fee_bps']:g} bps, slippage "
        f"{settings['slippage_bps']:g} bps, {'long/short' if settings['allow_short'] else 'long/flat'}; "
        "decisions at each bar close, filled at the next bar's open.",
        "",
        "| Metric | Strategy | Buy and hold |",
        "|---|---:|---:|",
        *(f"| {name} | {ours} | {theirs} |" for name, ours, theirs in summary_rows(report)),
        "",
        f"Decisions: {signals['decisions']} ({', '.join(f'{k} {v}' for k, v in signals['by_signal'].items())}); "
        f"actionable: {', '.join(f'{k} {v}' for k, v in signals['actionable'].items())}.",
        "",
        f"Data: {data['news']} news items read, {data['news_scored']} scored for {report['symbol']}, "
        f"{data['news_without_symbol']} about no traded symbol, {data['news_duplicate']} duplicates; "
        f"{data['bars_missing']} missing bar(s) in {data['gaps']} gap(s); {data['dead_letters']} dead letter(s).",
    ]
    if "model" in report:
        lines += ["", f"Sentiment model: {report['model']}."]
    if image:
        lines += ["", f"![equity and drawdown]({image})"]
    return "\n".join(lines) + "\n"
