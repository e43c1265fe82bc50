"""Fit the serving temperature of a trained model on data its training never saw, and write calibration.json.

By default that data is the run's own validation split, rebuilt from ``training_config.json`` exactly as training
drew it (same specs, ``val_fraction`` and seed): training only scored it (early stopping), never took a gradient
on it. The logits are the serving path's own (padding buckets, the dtype ``quantize=auto`` picks), read with
calibration off; ``log p`` differs from the logits by a per-row constant, which softmax ignores, so temperature
scaling on it is temperature scaling on the logits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.datasets import Example
from adapters.model.calibration import Calibration, calibrate, expected_calibration_error, softmax
from engine.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """The fitted calibration and, per held-out spec, ECE before and after it."""

    calibration: Calibration
    held_out: dict[str, dict[str, float]]
    path: Path


def served_log_probs(model: Any, texts: Sequence[str]) -> list[list[float]]:
    """``log p`` per text from a serving model (a per-row shift of its logits)."""
    return [[math.log(max(p, 1e-45)) for p in row] for row in model.predict_proba(list(texts))]


def validation_split(model_dir: Path) -> tuple[list[Example], str]:
    """The validation split of the run that trained ``model_dir``, and a description of it."""
    from sigstream.modes.train.config import TrainConfig
    from sigstream.modes.train.trainer import load_training_data

    config_file = model_dir / "training_config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{model_dir} has no training_config.json: pass --data with a held-out calibration set")
    cfg = TrainConfig.load(config_file)
    _, val, _ = load_training_data(cfg)
    spec = f"validation split of {'+'.join(cfg.data)} (val_fraction {cfg.val_fraction}, seed {cfg.seed})"
    return val, spec


def fit_calibration(
    model_dir: Path,
    *,
    data: Sequence[str] = (),
    held_out: Sequence[str] = (),
    model_settings: Any = None,
) -> CalibrationReport:
    """Fit ``model_dir``'s temperature on ``data`` (default: its validation split), write calibration.json, and
    report ECE before/after on each ``held_out`` spec.

    ``model_settings``: the ``ModelSettings`` to serve with; its adapter/base must name ``model_dir``.
    """
    from adapters.datasets import load_specs
    from adapters.model import TransformersSentimentModel

    if data:
        examples, fitted_on = load_specs(list(data)).examples, list(data)
    else:
        examples, spec = validation_split(model_dir)
        fitted_on = [spec]
    if not examples:
        raise InvalidInput("no examples to fit the temperature on")
    settings = model_settings.model_copy(update={"calibrate": False})
    model = TransformersSentimentModel.optimized(settings)
    cal = calibrate(served_log_probs(model, [e.text for e in examples]), [e.label for e in examples], fitted_on)
    path = cal.save(model_dir)
    log.info("temperature %.4f fitted on %d texts: ECE %.4f -> %.4f", cal.temperature, cal.n, cal.ece_before,
             cal.ece_after)  # fmt: skip
    report: dict[str, dict[str, float]] = {}
    for spec in held_out:
        rows = load_specs([spec]).examples
        logits = served_log_probs(model, [e.text for e in rows])
        labels = [e.label for e in rows]
        report[spec] = {
            "n": len(rows),
            "ece_before": expected_calibration_error([softmax(r) for r in logits], labels),
            "ece_after": expected_calibration_error([softmax(r, cal.temperature) for r in logits], labels),
        }
    return CalibrationReport(cal, report, path)
