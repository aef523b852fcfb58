"""Pictures of augmentation: an op at several magnitudes, a pipeline's draws, as one grid
(for the preview CLI, bloodcell_jax/data/preview.py, and a run's report)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from bloodcell_jax import atomic


def one_per_class(data, count: int):
  """Indices of up to `count` images, cycling through the classes so that each one shows."""
  by_class = [np.flatnonzero(data.labels == c) for c in range(len(data.class_names))]
  picks, depth = [], 0
  while len(picks) < min(count, len(data)):
    for members in by_class:
      if depth < len(members) and len(picks) < count:
        picks.append(int(members[depth]))
    depth += 1
  return np.asarray(picks)


def op_rows(image: np.ndarray, magnitudes):
  """{op name: [image at each magnitude]}, signed ops in their positive direction."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.augment import policies  # pylint: disable=g-import-not-at-top
  batch = tf.constant(np.repeat(image[None], len(magnitudes), axis=0), tf.float32)
  # Sign draw 0.9 keeps the sign positive; 0.5, 0.5 centres cutout's square.
  uniforms = tf.constant([[0.9, 0.5, 0.5]] * len(magnitudes), tf.float32)
  level = tf.constant(magnitudes, tf.float32)
  return {name: list(policies.apply_level(name, batch, level, uniforms).numpy())
          for name in policies.LEVELS.names()}


def pipeline_rows(spec: str, images: np.ndarray, labels, num_classes: int, rows: int, seed: int,
                  where: str):
  """`rows` lists of the pipeline's output on `images`, each row the draws of another epoch."""
  from bloodcell_jax.augment import ops as augment  # pylint: disable=g-import-not-at-top
  pipe = augment.parse(spec, where)
  out = []
  for epoch in range(rows):
    seeds = np.stack([np.full(len(images), seed * 1000 + epoch), np.arange(len(images))], 1)
    result = pipe.apply_with_seeds(images, seeds, labels=labels, num_classes=num_classes)
    out.append(list(result["image"].numpy()))
  return out


def draw_grid(rows, path: str, title: str) -> None:
  """Rows of (label, images, column titles or None) as one PNG."""
  width = max(len(images) for _, images, _ in rows)
  fig, axes = plt.subplots(len(rows), width, figsize=(1.1 * width + 1.8, 1.15 * len(rows) + 0.6),
                           squeeze=False)
  for r, (label, images, column_titles) in enumerate(rows):
    for c in range(width):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if c < len(images):
        ax.imshow(np.clip(images[c], 0, 255).astype(np.uint8))
        if column_titles:
          ax.set_title(column_titles[c], fontsize=7)
    axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  atomic.save_figure(fig, path, 100)
  plt.close(fig)
