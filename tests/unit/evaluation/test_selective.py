"""Selective prediction (bloodcell_jax/evaluation/selective.py)."""

import numpy as np
import pytest

from bloodcell_jax.evaluation import selective


def test_risk_coverage_answers_the_most_confident_first():
  confidence = np.array([0.9, 0.2, 0.8, 0.5])
  correct = np.array([True, False, False, True])
  coverage, risk = selective.risk_coverage(confidence, correct)
  np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3, 0.5])  # answered 0.9, 0.8, 0.5, 0.2
  assert selective.accuracy_at(confidence, correct, 0.5) == pytest.approx(0.5)
  assert selective.accuracy_at(confidence, correct, 0.75) == pytest.approx(2 / 3)
  assert selective.aurc(confidence, correct) == pytest.approx(np.mean([0, 0.5, 1 / 3, 0.5]))


def test_a_confidence_that_ranks_errors_last_is_better_than_one_that_does_not():
  rng = np.random.default_rng(0)
  correct = rng.random(1000) < 0.9
  informative = np.where(correct, 0.5, 0.0) + 0.5 * rng.random(1000)
  useless = rng.random(1000)
  good = selective.summary(informative, correct, "val")
  bad = selective.summary(useless, correct, "val")
  assert good["val_accuracy_at_80"] == 1.0 and good["val_aurc"] < bad["val_aurc"]
  assert bad["val_accuracy_at_90"] == pytest.approx(correct.mean(), abs=0.03)
  assert set(good) == {"val_accuracy_at_80", "val_accuracy_at_90", "val_accuracy_at_95",
                       "val_aurc"}
