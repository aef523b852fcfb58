"""What a run leaves for people: results.json and the confusion-matrix picture."""

import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def plot_confusion(confusion: np.ndarray, class_names, path: str, title: str) -> None:
  """Row-normalised confusion matrix with counts, saved as PNG."""
  confusion = np.asarray(confusion, np.float64)
  rows = confusion.sum(axis=1, keepdims=True)
  normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
  fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(class_names), 0.8 * len(class_names) + 1.0))
  ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  for i in range(len(class_names)):
    for j in range(len(class_names)):
      ax.text(j, i, f"{int(confusion[i, j])}\n{normalised[i, j]:.0%}", ha="center",
              va="center", fontsize=7, color="white" if normalised[i, j] > 0.5 else "black")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_text(path: str, text: str) -> None:
  """Writes whole or not at all: a run killed mid-write leaves the previous file."""
  partial = f"{path}.{os.getpid()}.partial"
  with open(partial, "w") as f:
    f.write(text)
  os.replace(partial, path)


def write_json(path: str, payload: dict) -> None:
  write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value)}")
