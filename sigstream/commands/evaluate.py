"""``sigstream eval``: score a sentiment model on labelled data (a contract other tools depend on)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from engine.errors import InvalidInput


def evaluate(
    data_spec: str,
    *,
    model_dir: str | None = None,
    base: str | None = None,
    batch_size: int | None = None,
    baseline: bool = False,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Metrics of a model on ``data_spec`` in the eval JSON contract (plus ``bad_rows`` and ``model``).

    ``model_dir`` is ``--model`` as every command reads it (:func:`sigstream.modes.sentiment.with_model_flag`): a
    peft adapter directory (served on ``base``, default the bundled MiniLM), a full sequence-classification model
    (path or hub id), or ``module:callable`` (a factory, scored as it is); None serves the shipped default adapter.
    """
    from adapters.datasets import load_spec
    from adapters.model import TransformersSentimentModel
    from adapters.model.calibration import expected_calibration_error, reliability_bins
    from sigstream.modes.sentiment import is_factory_spec, load_model
    from sigstream.modes.train.metrics import classification_metrics
    from sigstream.settings import flag, load_settings, with_overrides

    data = load_spec(data_spec)
    if not data.examples:
        raise InvalidInput(f"{data_spec}: no usable rows ({len(data.bad_rows)} bad)")
    factory = model_dir if model_dir is not None and is_factory_spec(model_dir) else None
    served = None if factory else model_dir  # a path or hub id, laid over SIGSTREAM_MODEL__*
    full_model = served is not None and not (Path(served) / "adapter_config.json").is_file()
    # Flags over SIGSTREAM_MODEL__* (the served configuration), over the defaults.
    settings = with_overrides(
        load_settings(),
        flag("--model", served, "model.base" if full_model else "model.adapter"),
        # A full model is served alone: "none" is ModelSettings' word for no adapter (None: "flag not given").
        flag("--model", "none" if full_model else None, "model.adapter"),
        flag("--base", base, "model.base"),
        flag("--batch-size", batch_size, "model.batch_size"),
        flag("--quantize", quantize, "model.quantize"),
    ).model
    model: Any
    if factory is not None:
        serving = {"--baseline": baseline or None, "--base": base, "--batch-size": batch_size, "--quantize": quantize}
        if given := [name for name, value in serving.items() if value is not None]:
            raise InvalidInput(f"{', '.join(given)}: only for a transformers model, not --model {factory}")
        model = load_model(factory)
    else:
        model = (
            TransformersSentimentModel.baseline(settings) if baseline
            else TransformersSentimentModel.optimized(settings)
        )
    started = time.perf_counter()
    probs = model.predict_proba(data.texts)
    elapsed = time.perf_counter() - started
    preds = [max(range(3), key=p.__getitem__) for p in probs]
    report = classification_metrics(data.labels, preds)
    report["ece"] = expected_calibration_error(probs, data.labels)
    report["reliability"] = reliability_bins(probs, data.labels)
    report["overlap"] = None if factory else training_overlap(settings.adapter or settings.base, data.texts)
    report["texts_per_s"] = len(probs) / elapsed if elapsed > 0 else float("inf")
    report["bad_rows"] = len(data.bad_rows)
    report["bad_row_reasons"] = dict(Counter(b.reason for b in data.bad_rows))
    report["model"] = getattr(model, "description", model_dir)
    return report


def _table(report: dict[str, Any], data_spec: str) -> Any:
    from rich.table import Table

    table = Table(title=f"sigstream eval: {data_spec} (n={report['n']}, bad rows={report['bad_rows']})")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="right" if col != "label" else "left")
    for label, m in report["per_class"].items():
        table.add_row(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    table.add_section()
    table.add_row("accuracy", "", "", f"{report['accuracy']:.4f}", str(report["n"]))
    table.add_row("macro F1", "", "", f"{report['macro_f1']:.4f}", "")
    table.add_row("weighted F1", "", "", f"{report['weighted_f1']:.4f}", "")
    table.add_row("ECE (15 bins)", "", "", f"{report['ece']:.4f}", "")
    table.caption = f"{report['texts_per_s']:.1f} texts/s | {report['model']}"
    return table


def eval_command(
    data: str = typer.Option(..., "--data", help="CSV (text,label) or spec: fpb[:50|66|75|all][:train|test], tfns."),
    model: str | None = typer.Option(None, "--model", help="Adapter folder or full model (path or hub id), or "
                                     "module:callable; default: the shipped adapter."),
    base: str | None = typer.Option(None, "--base", help="Base under an adapter; default: bundled all-MiniLM-L6-v2."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Texts per forward pass (optimized path)."),
    baseline: bool = typer.Option(False, "--baseline", help="The chapter's loop: one text per forward, fp32."),
    quantize: str | None = typer.Option(None, "--quantize", help="auto, none, int8-dynamic, 4bit or 8bit."),
    json_out: bool = typer.Option(False, "--json", help="Write the metrics JSON to stdout (table goes to stderr)."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a reliability diagram (accuracy vs confidence, 15 bins) to this PNG."
    ),
) -> None:
    """Evaluate a sentiment model: accuracy, macro/weighted F1, per-class scores, confusion, ECE, texts/s.

    Example: sigstream eval --data fpb:50:test --json --plot reliability.png
    """
    from rich.console import Console

    report = evaluate(data, model_dir=model, base=base, batch_size=batch_size, baseline=baseline, quantize=quantize)
    if report["bad_rows"]:
        typer.echo(f"{report['bad_rows']} bad rows not scored: {report['bad_row_reasons']}", err=True)
    overlap = report["overlap"]
    if overlap is not None and overlap.shared:
        typer.echo(
            f"warning: {overlap.shared} of {report['n']} texts ({overlap.shared / report['n']:.1%}) are in the "
            f"model's own training data ({overlap.source}): these scores overstate held-out quality",
            err=True,
        )
    if plot is not None:
        plot_reliability(report["reliability"], report["ece"], plot, title=f"{data} | {model or 'default adapter'}")
    Console(file=sys.stderr if json_out else sys.stdout).print(_table(report, data))
    if json_out:
        contract = {
            k: report[k]
            for k in (
                "n",
                "accuracy",
                "macro_f1",
                "weighted_f1",
                "per_class",
                "confusion",
                "labels",
                "texts_per_s",
                "ece",
            )
        }  # exactly the contract's keys (issue 4, ece from issue 17); bad rows are reported on stderr above
        sys.stdout.write(json.dumps(contract) + "\n")


@dataclass(frozen=True, slots=True)
class Overlap:
    """How many scored texts the model was trained on, and what its training data was."""

    shared: int
    source: str


def training_overlap(model_dir: str | None, texts: list[str]) -> Overlap | None:
    """The scored texts that are in the training split of the run that produced ``model_dir`` (rebuilt from its
    training_config.json as training drew it: its validation split is not training data). None when the model has
    no such record (a hub model) or its training data is not readable here."""
    if not model_dir or not (Path(model_dir) / "training_config.json").is_file():
        return None
    from sigstream.modes.train.config import TrainConfig
    from sigstream.modes.train.trainer import load_training_data

    try:
        cfg = TrainConfig.load(Path(model_dir) / "training_config.json")
        train, _, _ = load_training_data(cfg)
    except (InvalidInput, ValueError) as exc:
        typer.echo(f"note: could not check overlap with the model's training data: {exc}", err=True)
        return None
    seen = {e.text for e in train}
    return Overlap(sum(t in seen for t in texts), "+".join(cfg.data))


def plot_reliability(bins: list[Any], ece: float, path: Path, title: str = "") -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the share of texts per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = bins[0].hi - bins[0].lo
    filled = [b for b in bins if b.count]
    ax.bar([b.lo for b in filled], [b.accuracy for b in filled], width=width, align="edge", edgecolor="black",
           alpha=0.7, label="accuracy")  # fmt: skip
    ax.bar([b.lo for b in filled], [b.confidence - b.accuracy for b in filled], bottom=[b.accuracy for b in filled],
           width=width, align="edge", color="red", alpha=0.3, label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {ece:.4f} (15 equal-width bins)", fontsize=9)
    ax.legend(loc="upper left")
    total = sum(b.count for b in bins) or 1
    hist.bar([b.lo for b in bins], [b.count / total for b in bins], width=width, align="edge", edgecolor="black")
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("share of texts")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
