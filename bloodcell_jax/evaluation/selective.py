"""Selective prediction: how accurate a model is on the images it is most sure of.

Ranking images by a confidence and answering only the most confident fraction (the coverage)
trades answers for accuracy. The risk-coverage curve (Geifman and El-Yaniv 2017) is the error
of the answered images at every coverage; its area (AURC, lower is better) sums it up.
"""

from typing import Sequence

import numpy as np

COVERAGES = (0.8, 0.9, 0.95)


def risk_coverage(confidence: np.ndarray, correct: np.ndarray):
  """(coverage, risk): after answering the k most confident images, k = 1..N, the fraction
  answered and the error among them. Ties are broken by image order (stable)."""
  order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
  errors = np.cumsum(~np.asarray(correct, bool)[order])
  answered = np.arange(1, len(order) + 1)
  return answered / len(order), errors / answered


def accuracy_at(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
  """Accuracy on the `coverage` most confident fraction of the images (at least one)."""
  covered, risk = risk_coverage(confidence, correct)
  k = max(int(np.floor(coverage * len(covered) + 1e-9)), 1)
  return float(1.0 - risk[k - 1])


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
  """Area under the risk-coverage curve: the mean risk over all coverages."""
  return float(np.mean(risk_coverage(confidence, correct)[1]))


def summary(confidence: np.ndarray, correct: np.ndarray, prefix: str,
            coverages: Sequence[float] = COVERAGES) -> dict:
  """`<prefix>_accuracy_at_<80|90|95>` and `<prefix>_aurc`."""
  found = {f"{prefix}_accuracy_at_{round(100 * c)}": accuracy_at(confidence, correct, c)
           for c in coverages}
  found[f"{prefix}_aurc"] = aurc(confidence, correct)
  return found
