"""How far a model's confidence can be trusted, and temperature scaling to fix it.

Expected calibration error (ECE) bins the examples by confidence (the top class's
probability) and averages |accuracy - mean confidence| over the bins, weighted by their
share of examples (Guo et al. 2017, 15 equal-width bins). Temperature scaling divides
every logit by one number T, fitted to minimise the negative log-likelihood on the
validation set: probabilities change, the predicted class does not.
"""

import numpy as np
from scipy import optimize, special

NUM_BINS = 15


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS):
  """(count, mean confidence, accuracy) of each equal-width confidence bin."""
  confidence = probabilities.max(axis=1)
  correct = probabilities.argmax(axis=1) == labels
  # Bin i holds confidences in (i / n, (i + 1) / n]; a confidence of 0 joins bin 0.
  index = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
  count = np.bincount(index, minlength=num_bins).astype(np.float64)
  safe = np.maximum(count, 1.0)
  mean_confidence = np.bincount(index, confidence, minlength=num_bins) / safe
  accuracy = np.bincount(index, correct.astype(np.float64), minlength=num_bins) / safe
  return count, mean_confidence, accuracy


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               num_bins: int = NUM_BINS) -> float:
  count, confidence, accuracy = reliability_bins(probabilities, labels, num_bins)
  return float(np.sum(count * np.abs(accuracy - confidence)) / max(count.sum(), 1.0))


def negative_log_likelihood(log_probabilities: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(true class)."""
  return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))


def scaled_log_probabilities(log_probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """log softmax(z / T), from log softmax(z) (which differs from z by a constant per row)."""
  return special.log_softmax(np.asarray(log_probabilities, np.float64) / temperature, axis=1)


def fit_temperature(log_probabilities: np.ndarray, labels: np.ndarray) -> float:
  """The T in [0.05, 20] that minimises the negative log-likelihood of `labels`."""
  objective = lambda log_t: negative_log_likelihood(
      scaled_log_probabilities(log_probabilities, np.exp(log_t)), labels)
  result = optimize.minimize_scalar(objective, bounds=(np.log(0.05), np.log(20.0)),
                                    method="bounded", options={"xatol": 1e-4})
  return float(np.exp(result.x))


def summary(log_probabilities: np.ndarray, labels: np.ndarray, temperature: float,
            prefix: str) -> dict:
  """ECE and NLL of the outputs before and after dividing by `temperature`."""
  scaled = scaled_log_probabilities(log_probabilities, temperature)
  return {
      f"{prefix}_ece": expected_calibration_error(np.exp(log_probabilities), labels),
      f"{prefix}_nll": negative_log_likelihood(log_probabilities, labels),
      f"{prefix}_ece_calibrated": expected_calibration_error(np.exp(scaled), labels),
      f"{prefix}_nll_calibrated": negative_log_likelihood(scaled, labels),
  }
