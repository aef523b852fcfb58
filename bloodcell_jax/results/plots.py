"""The pictures a run and a sweep leave for people (matplotlib, PNG)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from bloodcell_jax import atomic


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
  atomic.save_figure(fig, path, 120)
  plt.close(fig)


def plot_reliability(curves, path: str, title: str) -> None:
  """Reliability diagrams side by side: for each (label, count, confidence, accuracy, ece),
  the accuracy of each confidence bin against the diagonal of perfect calibration."""
  fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.8), squeeze=False)
  for ax, (label, count, confidence, accuracy, ece) in zip(axes[0], curves):
    edges = np.linspace(0.0, 1.0, len(count) + 1)
    filled = count > 0
    ax.bar(edges[:-1][filled], accuracy[filled], width=1.0 / len(count), align="edge",
           color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar(edges[:-1][filled], (confidence - accuracy)[filled], bottom=accuracy[filled],
           width=1.0 / len(count), align="edge", color="#dd8452", alpha=0.45,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{label}: ECE {ece:.2%}", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  atomic.save_figure(fig, path, 110)
  plt.close(fig)


def plot_curves(records, path: str) -> bool:
  """Training curves from metrics.jsonl records: loss, accuracy and learning rate against
  the step. False (nothing written) when the records hold no curve."""
  panels = [("loss", ("train_loss", "val_loss")),
            ("accuracy", ("train_accuracy", "val_accuracy", "ema_val_accuracy")),
            ("learning rate", ("train_learning_rate",))]
  series = {key: _series(records, key) for _, keys in panels for key in keys}
  panels = [(title, [k for k in keys if series[k]]) for title, keys in panels]
  panels = [(title, keys) for title, keys in panels if keys]
  if not panels:
    return False
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
  for ax, (title, keys) in zip(axes[0], panels):
    for key in keys:
      steps, values = zip(*series[key])
      ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
              label=key)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  atomic.save_figure(fig, path, 100)
  plt.close(fig)
  return True


def _series(records, key: str) -> list:
  """(step, value) of `key`; validation values only from the epoch-end records (the final
  record repeats the best checkpoint's)."""
  return [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))
          and (key.startswith("train_") or "epoch" in r)]


def plot_metric_by_group(names, means, stds, metric: str, path: str) -> None:
  """One bar per run group: the mean of `metric` over its seeds, with +- one std."""
  fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(names) + 1.5), 3.8))
  positions = np.arange(len(names))
  ax.bar(positions, means, yerr=stds, capsize=3, color="#4c72b0")
  ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
  finite = [m for m in means if np.isfinite(m)]
  if finite:
    low = min(finite) - 2 * max([s for s in stds if np.isfinite(s)] + [0.0])
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(finite) + 0.05) + 0.01)
  ax.set_ylabel(metric)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  atomic.save_figure(fig, path, 100)
  plt.close(fig)
