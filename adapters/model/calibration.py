"""Confidence calibration: expected calibration error, reliability bins, and temperature scaling.

The composite signal weights each news item by the model's top probability, so that probability should mean what
it says: of the texts scored 0.9, about 90% right. Temperature scaling (Guo et al., 2017) divides the logits by one
scalar ``T`` fitted on held-out data; it never changes the argmax (so accuracy and F1 stay the same), and because it
acts on each row alone it keeps serving batch-invariant.

The fitted ``T`` lives beside the adapter (or the full model) as ``calibration.json``; serving reads it through
:func:`served_temperature`. Pure Python: no torch import here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidInput

CALIBRATION_FILE = "calibration.json"
ECE_BINS = 15
# Search range of T; outside it a model is broken rather than over- or under-confident.
T_MIN, T_MAX = 0.05, 20.0


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One equal-width bin of the top probability: ``lo < conf <= hi`` (the first bin also holds 0)."""

    lo: float
    hi: float
    count: int
    confidence: float  # mean top probability in the bin (0 when empty)
    accuracy: float  # share of the bin's predictions that are right (0 when empty)


def reliability_bins(
    probs: Sequence[Sequence[float]], labels: Sequence[int], bins: int = ECE_BINS
) -> list[ReliabilityBin]:
    """Equal-width bins over the max probability, each with its count, mean confidence and accuracy."""
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} probability rows but {len(labels)} labels")
    conf_sum = [0.0] * bins
    right = [0] * bins
    count = [0] * bins
    for row, label in zip(probs, labels, strict=True):
        top = max(row)
        pred = max(range(len(row)), key=row.__getitem__)
        # Bin b holds (b/bins, (b+1)/bins]; ceil - 1 puts an edge value in the lower bin, as the usual ECE code does.
        b = min(bins - 1, max(0, math.ceil(top * bins) - 1))
        conf_sum[b] += top
        right[b] += int(pred == label)
        count[b] += 1
    return [
        ReliabilityBin(
            b / bins,
            (b + 1) / bins,
            count[b],
            conf_sum[b] / count[b] if count[b] else 0.0,
            right[b] / count[b] if count[b] else 0.0,
        )
        for b in range(bins)
    ]


def expected_calibration_error(probs: Sequence[Sequence[float]], labels: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of (bin share of texts) * |accuracy - mean confidence|, on the max probability."""
    n = len(labels)
    if n == 0:
        return 0.0
    return sum(b.count / n * abs(b.accuracy - b.confidence) for b in reliability_bins(probs, labels, bins))


def _log_softmax(row: Sequence[float], inv_t: float) -> list[float]:
    scaled = [x * inv_t for x in row]
    top = max(scaled)
    log_z = top + math.log(sum(math.exp(x - top) for x in scaled))
    return [x - log_z for x in scaled]


def softmax(row: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Softmax of ``row / temperature``."""
    return [math.exp(x) for x in _log_softmax(row, 1.0 / temperature)]


def nll(logits: Sequence[Sequence[float]], labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    inv_t = 1.0 / temperature
    return -sum(_log_softmax(row, inv_t)[y] for row, y in zip(logits, labels, strict=True)) / max(1, len(labels))


def fit_temperature(logits: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The ``T`` that minimises the NLL of ``labels`` under ``softmax(logits / T)``.

    The NLL is convex in ``1/T`` (log-sum-exp of a linear function, minus a linear term), so a golden-section search
    over ``1/T`` in ``[1/T_MAX, 1/T_MIN]`` finds the one minimum; 80 rounds narrow it far below any useful precision.
    """
    if not logits:
        raise InvalidInput("cannot fit a temperature on no examples")
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, 1.0 / a), nll(logits, labels, 1.0 / b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, 1.0 / a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, 1.0 / b)
    return 1.0 / ((lo + hi) / 2)


@dataclass(frozen=True, slots=True)
class Calibration:
    """What ``calibration.json`` holds: the temperature and the evidence for it."""

    temperature: float
    fitted_on: list[str]  # data specs (or a description of the split) the temperature was fitted on
    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    method: str = "temperature"
    # The NLL-optimal temperature; ``temperature`` is 1.0 instead when it would raise the fitting split's own ECE.
    fitted_temperature: float | None = None
    note: str = ""

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def calibrate(logits: Sequence[Sequence[float]], labels: Sequence[int], fitted_on: Sequence[str]) -> Calibration:
    """Fit a temperature on (``logits``, ``labels``) and record NLL and ECE before and after.

    The temperature minimises the NLL, as Guo et al. fit it. When the model is already close to calibrated the
    NLL optimum sits within noise of 1 and can still raise the binned ECE; a temperature that makes the fitting
    split's own ECE worse is not kept (1.0 is, with the fitted value and the reason recorded). Only the fitting
    split decides this, never a held-out one.
    """
    fitted = fit_temperature(logits, labels)
    ece_before = expected_calibration_error([softmax(row) for row in logits], labels)
    ece_fitted = expected_calibration_error([softmax(row, fitted) for row in logits], labels)
    keep = ece_fitted <= ece_before
    t = fitted if keep else 1.0
    note = (
        ""
        if keep
        else (
            f"the NLL-optimal temperature {fitted:.4f} raised this split's ECE {ece_before:.4f} -> {ece_fitted:.4f}; "
            "kept 1.0"
        )
    )
    return Calibration(
        temperature=t,
        fitted_on=list(fitted_on),
        n=len(labels),
        nll_before=nll(logits, labels),
        nll_after=nll(logits, labels, t),
        ece_before=ece_before,
        ece_after=ece_fitted if keep else ece_before,
        fitted_temperature=fitted,
        note=note,
    )


def load_temperature(directory: str | Path | None) -> float:
    """The temperature in ``directory/calibration.json``; 1.0 (no scaling) when there is none.

    A file that exists but is not a positive finite temperature is an error, not a silent 1.0.
    """
    if directory is None:
        return 1.0
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        raw: Any = json.loads(path.read_text())
        t = float(raw["temperature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: not a calibration file ({exc})") from None
    if not (math.isfinite(t) and t > 0):
        raise InvalidInput(f"{path}: temperature must be a positive number, got {t}")
    return t


def served_temperature(adapter: str | None, base: str, enabled: bool = True) -> float:
    """The temperature serving applies: the adapter's calibration.json, or, for a base served alone, the base
    directory's (a fine-tuned full model); 1.0 when disabled or absent (hub ids have none)."""
    if not enabled:
        return 1.0
    return load_temperature(adapter if adapter else (base if Path(base).is_dir() else None))


def scale_logits(logits: Any, temperature: float) -> Any:
    """``logits / temperature``: one scalar for every row, so a text's probabilities never depend on its batch."""
    return logits if temperature == 1.0 else logits / temperature
