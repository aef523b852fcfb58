"""Calibration error and temperature scaling."""

import numpy as np
import pytest

from bloodcell_jax.evaluation import calibration


def test_expected_calibration_error_of_known_cases():
  labels = np.zeros(10, np.int64)
  overconfident = np.tile([0.9, 0.1], (10, 1))
  overconfident[:4] = [0.1, 0.9]  # 60% right at 90% confidence
  assert calibration.expected_calibration_error(overconfident, labels) == pytest.approx(0.3)
  count, confidence, accuracy = calibration.reliability_bins(overconfident, labels)
  assert count.sum() == 10 and count[13] == 10  # 0.9 lies in (13/15, 14/15]
  assert (confidence[13], accuracy[13]) == (pytest.approx(0.9), pytest.approx(0.6))
  perfect = np.tile([1.0, 0.0], (10, 1))
  assert calibration.expected_calibration_error(perfect, labels) == 0.0


def test_temperature_scaling_recovers_the_temperature_and_keeps_the_predictions():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (20000, 6))
  true_probs = np.exp(calibration.scaled_log_probabilities(logits, 2.0))
  labels = np.array([rng.choice(6, p=p) for p in true_probs])
  log_probs = calibration.scaled_log_probabilities(logits, 1.0)
  temperature = calibration.fit_temperature(log_probs, labels)
  assert temperature == pytest.approx(2.0, rel=0.05)
  summary = calibration.summary(log_probs, labels, temperature, "val")
  assert summary["val_ece_calibrated"] < 0.02 < summary["val_ece"]
  assert summary["val_nll_calibrated"] < summary["val_nll"]
  scaled = calibration.scaled_log_probabilities(log_probs, temperature)
  np.testing.assert_array_equal(scaled.argmax(1), log_probs.argmax(1))
