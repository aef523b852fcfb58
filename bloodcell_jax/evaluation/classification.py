"""Classification metrics from counts or from every example's outputs: accuracy, balanced
accuracy (mean recall over the classes present), per-class recall and the loss."""

import numpy as np

from bloodcell_jax.evaluation import calibration


def confusion_scores(confusion: np.ndarray, class_names):
  """(accuracy, balanced accuracy: the mean recall of the classes present, {class: recall} of
  the classes present) from counts (rows: labels)."""
  confusion = np.asarray(confusion, np.float64)
  support = confusion.sum(axis=1)
  recall = np.divide(np.diag(confusion), support, out=np.zeros_like(support),
                     where=support > 0)
  present = support > 0
  return (float(np.trace(confusion) / max(confusion.sum(), 1.0)),
          float(recall[present].mean()) if present.any() else 0.0,
          {name: float(r) for name, r, p in zip(class_names, recall, present) if p})


def summarize_confusion(confusion: np.ndarray, class_names, prefix: str) -> dict:
  """Accuracy, balanced accuracy and per-class accuracy (recall) from counts."""
  accuracy, balanced, recall = confusion_scores(confusion, class_names)
  return {f"{prefix}_accuracy": accuracy, f"{prefix}_balanced_accuracy": balanced,
          f"per_class_{prefix}_accuracy": recall}


def confusion_from_outputs(log_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Counts of (label, argmax) over every example; probabilities work as well as their logs."""
  num_classes = log_probabilities.shape[1]
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, log_probabilities.argmax(axis=1)), 1)
  return confusion


def summarize_outputs(log_probabilities: np.ndarray, labels: np.ndarray, class_names,
                      prefix: str, suffix: str = "") -> dict:
  """`summarize_confusion` and the loss (mean negative log-likelihood) of every example's
  log probabilities; every key ends in `suffix`."""
  summary = summarize_confusion(confusion_from_outputs(log_probabilities, labels), class_names,
                                prefix)
  summary[f"{prefix}_loss"] = calibration.negative_log_likelihood(log_probabilities, labels)
  return {f"{key}{suffix}": value for key, value in summary.items()}
