"""A model's probabilities on another lab's labelled images, summarised two ways.

Labs label only some classes (often the white cells alone). The model chooses among all the
run's classes; the summary gives accuracy, balanced accuracy over the classes present (the mean
recall of the classes that have images), per-class recall and the confusion matrix, and the same
with the choice restricted to a list of classes (by default the classes present): the other
classes' probabilities are dropped and the rest renormalised, so the argmax is over the list.
"""

from typing import Optional, Sequence

import numpy as np

from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import classification


def restriction(class_names: Sequence[str], names: Optional[Sequence[str]],
                where: str = "--classes") -> list:
  """Indices (in the run's class order) of `names`; an unknown or empty list is a UserError
  naming `where` and the known names."""
  names = [n.strip() for n in names or () if n.strip()]
  shown = f"{where}={','.join(names)}"
  if not names:
    raise UserError(f"{shown}: expected one class at least (known: {', '.join(class_names)})")
  unknown = [n for n in names if n not in class_names]
  if unknown:
    raise UserError(f"{shown}: unknown class '{unknown[0]}' (known: {', '.join(class_names)})")
  return sorted({list(class_names).index(n) for n in names})


def restrict_probabilities(probabilities: np.ndarray, indices: Sequence[int]) -> np.ndarray:
  """`probabilities` (N, C) with the classes outside `indices` at 0 and the rest renormalised
  (a row whose kept probabilities are all 0 becomes uniform over them)."""
  probabilities = np.asarray(probabilities, np.float64)
  kept = np.zeros_like(probabilities)
  kept[:, indices] = probabilities[:, indices]
  total = kept.sum(axis=1, keepdims=True)
  uniform = np.zeros(probabilities.shape[1])
  uniform[list(indices)] = 1.0 / len(indices)
  return np.where(total > 0, kept / np.where(total > 0, total, 1.0), uniform)


def _scores(probabilities: np.ndarray, labels: np.ndarray, class_names) -> dict:
  confusion = classification.confusion_from_outputs(probabilities, labels)
  accuracy, balanced, recall = classification.confusion_scores(confusion, class_names)
  return {"accuracy": accuracy, "balanced_accuracy": balanced, "per_class_recall": recall,
          "confusion": confusion.tolist()}


def summarize(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
              restrict: Optional[Sequence[str]] = None, where: str = "--classes") -> dict:
  """Accuracy, balanced accuracy over the classes present, per-class recall (classes present
  only) and the confusion matrix (C x C counts, rows: labels) of the argmax over all classes,
  and the same (keys prefixed `restricted_`) of the argmax over `restrict` (class names; None
  or empty: the classes present in `labels`)."""
  probabilities = np.asarray(probabilities)
  labels = np.asarray(labels, np.int64)
  class_names = list(class_names)
  if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(class_names)):
    raise ValueError(f"probabilities of shape {probabilities.shape}; expected "
                     f"({len(labels)}, {len(class_names)})")
  present = sorted(set(labels.tolist()))
  indices = (restriction(class_names, restrict, where) if restrict else present)
  restricted = restrict_probabilities(probabilities, indices)
  full = _scores(probabilities, labels, class_names)
  within = _scores(restricted, labels, class_names)
  return {"num_images": int(len(labels)), "class_names": class_names,
          "classes_present": [class_names[c] for c in present],
          "restricted_to": [class_names[c] for c in indices],
          **full, **{f"restricted_{key}": value for key, value in within.items()}}


def markdown(summary: dict) -> str:
  """Per-class recall with the choice among all classes and restricted, then the totals."""
  counts = np.asarray(summary["confusion"]).sum(axis=1)
  names = summary["class_names"]
  lines = [f"| class | images | recall ({len(names)} classes) | recall (restricted) |",
           "|---|---|---|---|"]
  for name in summary["classes_present"]:
    lines.append(f"| {name} | {counts[names.index(name)]} | "
                 f"{100 * summary['per_class_recall'][name]:.1f} | "
                 f"{100 * summary['restricted_per_class_recall'][name]:.1f} |")
  lines += ["", f"{summary['num_images']} images of {len(summary['classes_present'])} classes. "
            f"Choosing among all {len(names)} classes: balanced accuracy "
            f"{100 * summary['balanced_accuracy']:.1f}%, accuracy "
            f"{100 * summary['accuracy']:.1f}%. Restricted to "
            f"{', '.join(summary['restricted_to'])}: balanced accuracy "
            f"{100 * summary['restricted_balanced_accuracy']:.1f}%, accuracy "
            f"{100 * summary['restricted_accuracy']:.1f}%."]
  return "\n".join(lines) + "\n"
