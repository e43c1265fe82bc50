"""Eval metrics against hand-computed confusion matrices (and scikit-learn as a second reference)."""

from __future__ import annotations

import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from sigstream.modes.train.metrics import classification_metrics, confusion_matrix

# 10 examples; rows = true (bearish, neutral, bullish), columns = predicted.
Y_TRUE = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 1, 2, 2, 0, 2]
#   true\pred  bear neu bull
#   bearish      2   1   0
#   neutral      0   3   1
#   bullish      1   0   2


def test_confusion_matrix_matches_hand_count() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED, 3) == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]


def test_metrics_match_hand_computation() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED)

    # bearish: P = 2/3, R = 2/3; neutral: P = 3/4, R = 3/4; bullish: P = 2/3, R = 2/3.
    assert m["per_class"]["bearish"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["neutral"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert m["per_class"]["bullish"]["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.75 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 4 * 0.75 + 3 * 2 / 3) / 10)
    assert m["n"] == 10
    assert m["labels"] == ["bearish", "neutral", "bullish"]


def test_class_never_predicted_scores_zero_precision_not_nan() -> None:
    # Nothing predicted bullish: P(bullish) has an empty denominator.
    m = classification_metrics([0, 1, 2, 2], [0, 1, 1, 0])

    assert m["per_class"]["bullish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["neutral"]["precision"] == pytest.approx(0.5)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]


def test_perfect_predictions_score_one() -> None:
    m = classification_metrics([0, 1, 2, 1], [0, 1, 2, 1])
    assert (m["accuracy"], m["macro_f1"], m["weighted_f1"]) == (1.0, 1.0, 1.0)


def test_agrees_with_scikit_learn_on_a_skewed_sample() -> None:
    y_true = [1] * 50 + [0] * 7 + [2] * 13
    y_pred = [1] * 44 + [2] * 4 + [0] * 2 + [0] * 5 + [1] * 2 + [2] * 9 + [1] * 3 + [0]
    m = classification_metrics(y_true, y_pred)

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for c, name in enumerate(m["labels"]):
        assert m["per_class"][name] == pytest.approx({"precision": p[c], "recall": r[c], "f1": f[c], "support": s[c]})
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        confusion_matrix([0, 1], [0], 3)
