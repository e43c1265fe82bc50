"""Classification metrics, computed from the confusion matrix (no framework needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.events import SENTIMENT_LABELS


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """``m[t][p]``: how many examples of true class ``t`` were predicted as ``p``."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    m = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        m[t][p] += 1
    return m


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division=0 convention: an empty denominator scores 0.
    return num / den if den else 0.0


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str] = SENTIMENT_LABELS
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Returns:
        ``{"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "labels"}``.
    """
    k = len(labels)
    m = confusion_matrix(y_true, y_pred, k)
    n = len(y_true)
    per_class: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(labels):
        tp = m[c][c]
        predicted = sum(m[r][c] for r in range(k))
        support = sum(m[c])
        precision = _ratio(tp, predicted)
        recall = _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    f1s = [float(per_class[name]["f1"]) for name in labels]
    supports = [int(per_class[name]["support"]) for name in labels]
    return {
        "n": n,
        "accuracy": _ratio(sum(m[c][c] for c in range(k)), n),
        "macro_f1": sum(f1s) / k,
        "weighted_f1": _ratio(sum(f * s for f, s in zip(f1s, supports, strict=True)), n),
        "per_class": per_class,
        "confusion": m,
        "labels": list(labels),
    }
