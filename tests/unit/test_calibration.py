"""ECE against a hand-computed example, temperature scaling against a known temperature, calibration.json rules."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adapters.model.calibration import (
    CALIBRATION_FILE,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    load_temperature,
    nll,
    reliability_bins,
    served_temperature,
    softmax,
)
from engine.errors import InvalidInput


def test_ece_matches_a_hand_computed_example() -> None:
    probs = [
        [0.90, 0.05, 0.05],  # top 0.90, right   -> bin 13 (0.867, 0.933]
        [0.05, 0.92, 0.03],  # top 0.92, wrong   -> bin 13
        [0.20, 0.30, 0.50],  # top 0.50, right   -> bin 7  (0.467, 0.533]
        [0.70, 0.20, 0.10],  # top 0.70, wrong   -> bin 10 (0.667, 0.733]
    ]
    labels = [0, 0, 2, 1]
    # bin 13: 2/4 * |0.5 - 0.91| = 0.205; bin 7: 1/4 * |1 - 0.5| = 0.125; bin 10: 1/4 * |0 - 0.7| = 0.175
    assert expected_calibration_error(probs, labels) == pytest.approx(0.505)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15
    assert [b.count for b in bins] == [0] * 7 + [1, 0, 0, 1, 0, 0, 2, 0]
    assert bins[13].confidence == pytest.approx(0.91) and bins[13].accuracy == 0.5


def test_a_perfectly_calibrated_bin_scores_zero_and_an_empty_set_scores_zero() -> None:
    probs = [[0.75, 0.25, 0.0]] * 4
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) == 0.0


def _sampled(temperature: float, n: int, seed: int) -> tuple[list[list[float]], list[int]]:
    """Logits and labels drawn from softmax(logits / temperature): the true temperature is known."""
    rng = random.Random(seed)
    logits = [[rng.gauss(0, 3) for _ in range(3)] for _ in range(n)]
    labels = [rng.choices(range(3), weights=softmax(row, temperature))[0] for row in logits]
    return logits, labels


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with() -> None:
    logits, labels = _sampled(2.0, 3000, seed=7)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.12)
    # It is the NLL's minimum: a step either way costs likelihood.
    assert nll(logits, labels, t) <= min(nll(logits, labels, t * 0.95), nll(logits, labels, t * 1.05))


def test_calibrate_lowers_ece_on_overconfident_logits_and_keeps_every_argmax() -> None:
    logits, labels = _sampled(3.0, 2000, seed=11)  # served at T=1 these are far too confident
    cal = calibrate(logits, labels, ["synthetic"])
    assert cal.temperature > 2.0
    assert cal.ece_after < cal.ece_before and cal.nll_after < cal.nll_before
    for row in logits:
        before, after = softmax(row), softmax(row, cal.temperature)
        assert max(range(3), key=before.__getitem__) == max(range(3), key=after.__getitem__)


def test_calibration_file_round_trips_and_its_absence_means_no_scaling(tmp_path: Path) -> None:
    assert load_temperature(tmp_path) == 1.0
    assert load_temperature(None) == 1.0
    logits, labels = _sampled(1.5, 500, seed=3)
    cal = calibrate(logits, labels, ["fpb:50:train+tfns validation split"])
    cal.save(tmp_path)
    assert load_temperature(tmp_path) == pytest.approx(cal.temperature)
    assert served_temperature(str(tmp_path), "some/hub-id") == pytest.approx(cal.temperature)
    assert served_temperature(str(tmp_path), "some/hub-id", enabled=False) == 1.0
    # A full model served alone carries its calibration in its own directory.
    assert served_temperature(None, str(tmp_path)) == pytest.approx(cal.temperature)
    assert served_temperature(None, "some/hub-id") == 1.0


@pytest.mark.parametrize(
    "bad", ['{"temperature": -1}', '{"temperature": "hot"}', '{"t": 1.0}', '{"temperature": 1e999}']
)
def test_a_broken_calibration_file_is_bad_input_not_a_silent_default(tmp_path: Path, bad: str) -> None:
    (tmp_path / CALIBRATION_FILE).write_text(bad)
    with pytest.raises(InvalidInput, match="calibration"):
        load_temperature(tmp_path)


def test_a_temperature_that_raises_the_fitting_splits_own_ece_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.model.calibration as calibration

    logits, labels = _sampled(1.0, 2000, seed=5)  # calibrated as it is
    monkeypatch.setattr(calibration, "fit_temperature", lambda _logits, _labels: 4.0)  # a bad fit, forced
    cal = calibration.calibrate(logits, labels, ["synthetic"])
    assert cal.temperature == 1.0 and cal.fitted_temperature == 4.0
    assert cal.ece_after == cal.ece_before and "kept 1.0" in cal.note
