"""Wiring for ``sigstream backtest``: files in, the engine's replay loop, a report folder out."""

from __future__ import annotations

import asyncio
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
from engine.backtest.study import Fold, StudyRun, study_report, walk_forward_folds
from engine.batcher import MicroBatcher
from engine.config import AggregatorSettings, EngineSettings
from engine.errors import InvalidInput
from engine.events import Interval, NewsItem
from engine.pipeline import SignalEngine
from engine.policy import DirectionPolicy
from engine.ports import SentimentModel
from sigstream.settings import Settings


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
                "policy",
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
                    result.policy,
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
        f"decisions at each bar close by the `{report.get('policy', 'sentiment')}` policy, filled at the next bar's "
        "open.",
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


# -- the study: several symbols and policies, walk-forward folds ---------------------------------------------
STUDY_POLICIES = ("buy_and_hold", "sentiment", "features", "composite", "direction")


def parse_policies(text: str) -> list[str]:
    """``"buy_and_hold,sentiment"`` -> the names, checked against the policies there are."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in STUDY_POLICIES]
    if not names or unknown:
        raise InvalidInput(f"--policies {text!r}: unknown {', '.join(unknown) or 'none given'}; "
                           f"choose from {','.join(STUDY_POLICIES)}")
    return list(dict.fromkeys(names))


def open_study_sources(
    prices: Sequence[Path], news: Path, *, symbols: Sequence[str], interval: Interval, files: FilesSettings
) -> dict[str, list[FileSource]]:
    """Per symbol, its price file (matched by name: ``BTCUSDT_1d.csv``) and the news, checked as for one symbol."""
    by_name = price_files(prices, symbols)
    return {s: open_backtest_sources(by_name[s], news, symbol=s, interval=interval, files=files) for s in symbols}


def price_files(prices: Sequence[Path], symbols: Sequence[str]) -> dict[str, Path]:
    """The price file of each symbol, by the pair its name states (one unnamed file for one symbol is fine)."""
    by_name: dict[str, Path] = {}
    for path in prices:
        named = pair_from_filename(path)
        if named is None and len(prices) == 1 and len(symbols) == 1:
            named = symbols[0]  # one unnamed file for one symbol is unambiguous
        if named is None:
            raise InvalidInput(f"--prices {path.name}: name the file for its symbol (BTCUSDT_1d.csv) with --symbols")
        if named in by_name:
            raise InvalidInput(f"--prices: two files for {named} ({by_name[named].name}, {path.name})")
        by_name[named] = path
    missing = [s for s in symbols if s not in by_name]
    if missing:
        raise InvalidInput(f"--symbols {','.join(missing)}: no --prices file for it (have {', '.join(by_name)})")
    return {s: by_name[s] for s in symbols}


def _news_span(sources: dict[str, list[FileSource]]) -> tuple[int, int]:
    """First and last publish time of the news (the period the news can inform)."""
    first = last = None
    for item in next(iter(sources.values()))[1].items():
        if isinstance(item, NewsItem):
            first = item.ts_event if first is None else min(first, item.ts_event)
            last = item.ts_event if last is None else max(last, item.ts_event)
    if first is None or last is None:
        raise InvalidInput("--news holds no usable news item: nothing to study")
    return first, last


def study_period(
    sources: dict[str, list[FileSource]], interval: Interval, start_ms: int | None, end_ms: int | None
) -> tuple[int, int]:
    """``--start``/``--end``, defaulting to the news period cut to whole bars."""
    if start_ms is None or end_ms is None:
        first, last = _news_span(sources)
        step = interval.ms
        start_ms = start_ms if start_ms is not None else (first // step + 1) * step  # the first close after news
        end_ms = end_ms if end_ms is not None else (last // step + 1) * step  # the close after the last news
    if end_ms <= start_ms:
        raise InvalidInput(f"backtest end {end_ms} is not after its start {start_ms}")
    return start_ms, end_ms


def walk_forward_direction(
    prices: dict[str, Path],
    news: Path,
    interval: Interval,
    engine_settings: EngineSettings,
    files: FilesSettings,
    folds: Sequence[Fold],
    embedder: Any,
    direction_settings: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """The direction model trained before each fold on what was known at its start, as one
    :class:`engine.ports.DirectionModel` that uses each fold's model inside that fold; and each fold's training."""
    from adapters.model.direction import DirectionPredictor, WalkForwardDirectionModel, fit, train_before
    from sigstream.modes.direction import embed_all, read_market_files, samples_for

    market = read_market_files(list(prices.values()), [news], interval, files, list(prices))
    samples = samples_for(market, interval, engine_settings.symbols, direction_settings)
    embed_all(embedder, samples)
    models, trained = [], []
    for fold in folds:
        model = fit(train_before(samples, fold.start_ms), embedder, direction_settings)
        models.append((fold.start_ms, DirectionPredictor(model, embedder)))
        trained.append({"fold": fold.index, "train_samples": model.train_samples,
                        "trained_until_ts": model.trained_until, "train_labels": model.train_labels})
    return WalkForwardDirectionModel(models), trained


async def run_study_files(
    sources: dict[str, list[FileSource]],
    model: SentimentModel,
    engine_settings: EngineSettings,
    settings: BacktestSettings,
    *,
    policies: Sequence[str],
    folds: Sequence[Fold],
    start_ms: int,
    end_ms: int,
    direction: Any = None,
    progress: bool = True,
) -> list[StudyRun]:
    """Every (symbol, policy) backtest over ``[start_ms, end_ms]``; one batcher, so each headline is scored once.

    ``direction`` is the :class:`engine.ports.DirectionModel` of the ``direction`` policy (walk-forward or loaded).
    """
    batcher = MicroBatcher(model, engine_settings.batcher)
    runs = []
    for symbol, symbol_sources in sources.items():
        for name in policies:
            policy_settings = engine_settings.policy.model_copy(update={"name": name})
            settings_for = engine_settings.model_copy(update={"policy": policy_settings})
            policy = None
            if name == "direction":
                if direction is None:
                    raise InvalidInput("the direction policy needs a model (--policy-model DIR, or train walk-forward)")
                policy = DirectionPolicy(direction, engine_settings.interval.ms, policy_settings.direction_threshold)
            engine = SignalEngine(settings_for, symbols=frozenset({symbol}), policy=policy)
            bar = tqdm(desc=f"{symbol} {name}", unit=" events", disable=not progress, mininterval=0.5)
            dead = DeadLetterFile(None)
            try:
                result = await run_backtest(
                    merge_in_time_order(symbol_sources), engine, batcher, settings, dead,
                    symbol=symbol, start_ms=start_ms, end_ms=end_ms, on_progress=bar.update,
                )
            finally:
                bar.close()
                await dead.close()
            runs.append(StudyRun(symbol, name, result))
    return runs


def write_study_report(report: dict[str, Any], runs: Sequence[StudyRun], folder: Path) -> list[Path]:
    """report.json, summary.md, trades.csv (with each trade's symbol and policy) and one PNG per symbol."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.json", folder / "summary.md", folder / "trades.csv"]
    written[0].write_bytes(report_json(report))
    images = {}
    for symbol in report["symbols"]:
        image = folder / f"{symbol}.png"
        plot_study_symbol([r for r in runs if r.symbol == symbol], image)
        images[symbol] = image.name
        written.append(image)
    written[1].write_text(study_markdown(report, images), encoding="utf-8")
    write_study_trades(runs, written[2])
    return written


def write_study_trades(runs: Sequence[StudyRun], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["symbol", "policy", "trade", "direction", "status", "quantity", "entry_decided",
                         "entry_time", "entry_price", "exit_decided", "exit_time", "exit_price", "bars_held",
                         "fees", "pnl", "return"])
        for run in runs:
            for number, t in enumerate(run.result.trades, start=1):
                writer.writerow([
                    run.symbol, run.policy, number, t.direction, t.status, f"{t.quantity:.8f}",
                    iso(t.entry_decided_at), iso(t.entry_ts), f"{t.entry_price:.8g}", iso(t.exit_decided_at),
                    iso(t.exit_ts), f"{t.exit_price:.8g}", t.bars_held, f"{t.fees:.6f}", f"{t.pnl:.6f}",
                    f"{t.return_pct:.6f}",
                ])  # fmt: skip


def _ci(values: Sequence[float | None]) -> str:
    low, high = values
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def study_rows(by_policy: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per policy of one symbol: the freqtrade-style columns of the summary and the terminal table."""
    rows: list[tuple[str, ...]] = []
    for policy, r in by_policy.items():
        s = r["strategy"]
        rows.append((
            policy, f"{s['trades']} / {s['open_trades']}", _pct(s["win_rate"]), _pct(s["total_return"]),
            _num(s["sharpe"]), _ci(s["sharpe_ci"]), _p(s["p_value_vs_buy_and_hold"]), _pct(s["max_drawdown"]),
            _pct(s["exposure"]),
            " ".join("n/a" if f["strategy"] is None or f["strategy"]["sharpe"] is None
                     else f"{f['strategy']['sharpe']:.2f}" for f in r["folds"]),
        ))  # fmt: skip
    return rows


STUDY_COLUMNS = ("Policy", "Trades (closed / open)", "Win rate", "Total return", "Sharpe", "Sharpe 95% CI",
                 "p vs buy and hold", "Max drawdown", "Exposure", "Sharpe per fold")


def study_markdown(report: dict[str, Any], images: dict[str, str] | None = None) -> str:
    folds = report["folds"]
    first = next(iter(next(iter(report["results"].values())).values()))
    settings = first["settings"]
    lines = [
        f"# Backtest study: {', '.join(report['symbols'])} {first['interval']}",
        "",
        f"{iso(folds[0]['start_ts'])} to {iso(folds[-1]['end_ts'])}, {len(folds)} walk-forward folds. Capital "
        f"{settings['initial_capital']:,.0f}, position {100 * settings['position_size']:g}% of equity, fees "
        f"{settings['fee_bps']:g} bps, slippage {settings['slippage_bps']:g} bps, "
        f"{'long/short' if settings['allow_short'] else 'long/flat'}; decisions at each bar close, filled at the "
        "next open. Sharpe intervals and p-values: paired stationary block bootstrap "
        f"({report['bootstrap']['resamples']} resamples, mean block {report['bootstrap']['mean_block_bars']:g} bars);"
        " p is one-sided, H0: the policy's Sharpe is at most buy and hold's (fully invested, same bars).",
    ]
    header = "| " + " | ".join(STUDY_COLUMNS) + " |"
    rule = "|---|" + "---:|" * (len(STUDY_COLUMNS) - 1)
    for symbol, by_policy in report["results"].items():
        bench = next(iter(by_policy.values()))["benchmark"]
        lines += ["", f"## {symbol}", "",
                  f"Buy and hold (fully invested): total return {_pct(bench['total_return'])}, Sharpe "
                  f"{_num(bench['sharpe'])} {_ci(bench['sharpe_ci'])}, max drawdown {_pct(bench['max_drawdown'])}.",
                  "", header, rule, *("| " + " | ".join(row) + " |" for row in study_rows(by_policy))]
        if images and symbol in images:
            lines += ["", f"![{symbol}: price with entries and exits, position, drawdown]({images[symbol]})"]
    lines += ["", "## Per policy (mean over symbols)", "",
              "| Policy | Symbols | Mean Sharpe | Mean total return | Trades | Beats buy and hold (p < 0.05) |",
              "|---|---:|---:|---:|---:|---|"]
    for policy, row in report["by_policy"].items():
        lines.append(f"| {policy} | {row['symbols']} | {_num(row['mean_sharpe'])} | "
                     f"{_pct(row['mean_total_return'])} | {row['trades']} | "
                     f"{', '.join(row['beats_buy_and_hold_at_5pct']) or 'none'} |")
    return "\n".join(lines) + "\n"


_POLICY_COLORS = {"buy_and_hold": "tab:gray", "sentiment": "tab:blue", "features": "tab:green",
                  "composite": "tab:purple", "direction": "tab:orange"}


def plot_study_symbol(runs: Sequence[StudyRun], path: Path) -> None:
    """Price with each policy's entries (^) and exits (v), each policy's position, and each drawdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = runs[0].result
    times = [datetime.fromtimestamp(p.ts / 1000, tz=UTC) for p in first.points]
    fig, (price_ax, pos_ax, dd_ax) = plt.subplots(
        3, 1, figsize=(9, 7), dpi=90, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1.3]}
    )
    try:
        price_ax.plot(times, [p.close for p in first.points], color="black", linewidth=1.0, label="close")
        for run in runs:
            color = _POLICY_COLORS.get(run.policy, "tab:red")
            result = run.result
            entries = [(t.entry_ts, t.entry_price) for t in result.trades]
            exits = [(t.exit_ts, t.exit_price) for t in result.trades if t.exit_ts is not None]
            if entries and run.policy != "buy_and_hold":
                price_ax.scatter([datetime.fromtimestamp(ts / 1000, tz=UTC) for ts, _ in entries],
                                 [p for _, p in entries], marker="^", color=color, s=28, label=f"{run.policy} entry")
            if exits:
                price_ax.scatter([datetime.fromtimestamp(ts / 1000, tz=UTC) for ts, _ in exits],
                                 [p for _, p in exits], marker="v", color=color, s=28, label=f"{run.policy} exit",
                                 edgecolors="black", linewidths=0.4)
            # The side held (+1 long, 0 flat, -1 short), nudged per policy so that overlapping lines stay visible.
            nudge = 0.04 * list(_POLICY_COLORS).index(run.policy) if run.policy in _POLICY_COLORS else 0.0
            pos_ax.step(times, [(p.position > 0) - (p.position < 0) + nudge for p in result.points], where="post",
                        color=color, linewidth=1.0, label=run.policy)
            dd_ax.plot(times, [-100 * d for d in drawdown_series([p.equity for p in result.points])], color=color,
                       linewidth=1.0, label=run.policy)
        dd_ax.plot(times, [-100 * d for d in drawdown_series([p.benchmark for p in first.points])], color="black",
                   linestyle=":", linewidth=1.0, label="buy and hold, fully invested")
        price_ax.set_title(f"{first.symbol} {first.interval.value}: entries (^) and exits (v) per policy")
        price_ax.set_ylabel("price")
        price_ax.legend(loc="best", fontsize=6, ncol=2)
        pos_ax.set_ylabel("position\n(1 long, 0 flat)")
        pos_ax.legend(loc="best", fontsize=6, ncol=3)
        dd_ax.set_ylabel("drawdown %")
        dd_ax.legend(loc="best", fontsize=6, ncol=2)
        for ax in (price_ax, pos_ax, dd_ax):
            ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def run_study(
    prices: list[Path],
    news: Path,
    symbols: list[str],
    policies: list[str],
    settings: Settings,
    account: BacktestSettings,
    *,
    start_ms: int | None,
    end_ms: int | None,
    folds: int,
    resamples: int,
    policy_model: Path | None,
    report: Path | None,
    progress: bool,
) -> tuple[dict[str, Any], list[Path]]:
    """The study behind ``sigstream backtest --symbols/--policies``: its report, and the files written."""
    interval = settings.engine.interval
    if resamples < 100:
        raise InvalidInput(f"--bootstrap {resamples}: use at least 100 resamples")
    sources = open_study_sources(prices, news, symbols=symbols, interval=interval, files=settings.files)
    start_ms, end_ms = study_period(sources, interval, start_ms, end_ms)
    fold_list = walk_forward_folds(start_ms, end_ms, folds, interval.ms)
    direction: Any = None
    training: list[dict[str, Any]] | str | None = None
    if "direction" in policies:
        if policy_model is not None:
            from sigstream.modes.direction import build_direction_policy  # a sibling room: the same loader

            engine = settings.engine.model_copy(
                update={"policy": settings.engine.policy.model_copy(update={"model_dir": str(policy_model)})}
            )
            direction = build_direction_policy(engine).model
            training = str(policy_model)
        else:
            from adapters.model.direction import DirectionSettings
            from sigstream.modes.direction import encoder

            direction, training = walk_forward_direction(
                price_files(prices, symbols), news, interval, settings.engine, settings.files, fold_list,
                encoder(settings.model, None), DirectionSettings(folds=folds),
            )

    from adapters.model import load_sentiment_model  # torch loads only once the inputs are known good

    model = load_sentiment_model(settings.model)
    runs = asyncio.run(
        run_study_files(sources, model, settings.engine, account, policies=policies, folds=fold_list,
                        start_ms=start_ms, end_ms=end_ms, direction=direction, progress=progress)
    )
    out = study_report(runs, fold_list, resamples=resamples)
    out["model"] = getattr(model, "description", type(model).__name__)
    out["start"], out["end"] = iso(start_ms), iso(end_ms)
    if training is not None:
        out["direction_model"] = training
    written = write_study_report(out, runs, report) if report is not None else []
    return out, written
