"""``sigstream direction train|eval``: the text + features next-bar direction model (walk-forward)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from engine.events import Interval
from sigstream.modes.direction import evaluate_direction, read_market_files, train_direction

console = Console(stderr=True)
direction_app = typer.Typer(
    help="The chapter's direction model: LoRA encoder embedding of the bar's news + the ten features -> MLP -> "
    "next-bar Down/Flat/Up. Walk-forward by time, never shuffled.",
    no_args_is_help=True,
)

_PRICES = typer.Option(..., "--prices", help="Kline CSV named like BTCUSDT_1d.csv; repeat for more symbols.")
_NEWS = typer.Option(..., "--news", help="News CSV (cryptonews.csv layout); repeat for more.")
_INTERVAL = typer.Option(Interval.D1, "--interval", help="Bar interval of the prices.")
_FLAT = typer.Option(0.01, "--flat-threshold", help="|next-bar return| at or below this is Flat (0.01 = 1%).")
_FOLDS = typer.Option(4, "--folds", help="Walk-forward folds over the bars that have news.")
_EPOCHS = typer.Option(300, "--epochs", help="Full-batch training steps per fold.")
_SEED = typer.Option(42, "--seed", help="Seed of the MLP's initialisation.")
_CACHE = typer.Option(None, "--embedding-cache", help="Folder of the cached news embeddings (~/.cache/sigstream).")
_JSON = typer.Option(False, "--json", help="Print the metrics JSON to stdout.")


def _settings(flat: float, folds: int, epochs: int, seed: int) -> Any:
    from adapters.model.direction import DirectionSettings
    from sigstream.settings import validated

    return validated(DirectionSettings, flat_threshold=flat, folds=folds, epochs=epochs, seed=seed)


def _print(report: dict[str, Any], json_out: bool, title: str) -> None:
    if json_out:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode())
        return
    table = Table(title=title)
    for column in ("fold", "from", "to", "n", "accuracy", "macro-F1", "majority acc.", "confusion (rows true D/F/U)"):
        table.add_column(column)
    from sigstream.modes.backtest import iso

    for m in report["folds"]:
        acc, f1, base = m["accuracy"], m["macro_f1"], m["majority_class_accuracy"]
        table.add_row(
            str(m["fold"]), str(iso(m["start_ts"]))[:10], str(iso(m["end_ts"]))[:10], str(m["samples"]),
            "n/a" if acc is None else f"{acc:.3f}", "n/a" if f1 is None else f"{f1:.3f}",
            "n/a" if base is None else f"{base:.3f}", str(m["confusion"]),
        )
    console.print(table)


@direction_app.command("train")
def train(
    prices: list[Path] = _PRICES,
    news: list[Path] = _NEWS,
    interval: Interval = _INTERVAL,
    out: Path = typer.Option(..., "--out", help="Folder for direction.pt, direction.json and metrics.json."),
    flat_threshold: float = _FLAT,
    folds: int = _FOLDS,
    epochs: int = _EPOCHS,
    seed: int = _SEED,
    embedding_cache: Path | None = _CACHE,
    json_out: bool = _JSON,
) -> None:
    """Evaluate walk-forward (each fold trained only on bars whose next bar closed before it), then train on
    everything and save the model.

    Example: sigstream direction train --prices BTCUSDT_1d.csv --prices ETHUSDT_1d.csv --news cryptonews.csv
    --interval 1d --out out/direction
    """
    from sigstream.modes.direction import encoder
    from sigstream.settings import flag, load_settings, with_overrides

    settings = with_overrides(load_settings(), flag("--interval", interval, "engine.interval"))
    direction = _settings(flat_threshold, folds, epochs, seed)
    market = read_market_files(prices, news, interval, settings.files)
    report = train_direction(market, interval, settings.engine, direction, encoder(settings.model, embedding_cache),
                             out)
    console.print(f"model: {out} ({report['samples']} bars, {report['samples_with_news']} with news; "
                  f"{report['seconds']['total']} s)")
    _print(report, json_out, f"direction walk-forward, {', '.join(report['symbols'])} {interval.value}")


@direction_app.command("eval")
def evaluate(
    prices: list[Path] = _PRICES,
    news: list[Path] = _NEWS,
    interval: Interval = _INTERVAL,
    model: Path | None = typer.Option(
        None, "--model", help="A trained model folder; without it each fold is trained on the bars before it."
    ),
    flat_threshold: float = _FLAT,
    folds: int = _FOLDS,
    epochs: int = _EPOCHS,
    seed: int = _SEED,
    embedding_cache: Path | None = _CACHE,
    json_out: bool = _JSON,
) -> None:
    """Accuracy, macro-F1 and the confusion matrix per walk-forward fold.

    Example: sigstream direction eval --prices BTCUSDT_1d.csv --news cryptonews.csv --interval 1d --json
    """
    from sigstream.modes.direction import encoder
    from sigstream.settings import flag, load_settings, with_overrides

    settings = with_overrides(load_settings(), flag("--interval", interval, "engine.interval"))
    direction = _settings(flat_threshold, folds, epochs, seed)
    market = read_market_files(prices, news, interval, settings.files)
    if model is not None:
        from adapters.model.direction import read_meta

        read_meta(model)  # a folder that is not a model is bad input before the encoder loads
    report = evaluate_direction(market, interval, settings.engine, direction,
                                encoder(settings.model, embedding_cache), model)
    _print(report, json_out, f"direction eval, {', '.join(report['symbols'])} {interval.value}")


def register(app: typer.Typer) -> None:
    app.add_typer(direction_app, name="direction")
