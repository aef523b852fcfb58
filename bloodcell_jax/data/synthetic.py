"""The embedded default dataset: procedurally drawn blood-cell-like images.

Synthetic, not medical data: eight classes whose drawings follow the coarse
look of the real PBC classes (cell size, nucleus shape, granules, cytoplasm
colour) so that a CNN can learn to tell them apart. Deterministic from a seed.
Used when no data source is given, and announced as synthetic wherever it is.
"""

import numpy as np

from bloodcell_jax.data.image_set import PBC_CLASS_NAMES, ImageSet

_BACKGROUND = np.array([236, 214, 214], np.float32)
_RED_CELL = np.array([226, 160, 165], np.float32)
_NUCLEUS = np.array([95, 50, 135], np.float32)
_DARK_NUCLEUS = np.array([65, 30, 100], np.float32)


def generate(num_images: int, image_size: int, seed: int = 0) -> ImageSet:
  """Balanced classes, `num_images` in all, each image drawn from its own RNG."""
  labels = np.arange(num_images, dtype=np.int32) % len(PBC_CLASS_NAMES)
  images = np.empty((num_images, image_size, image_size, 3), np.uint8)
  for i, label in enumerate(labels):
    rng = np.random.default_rng([seed, i])
    images[i] = _draw(int(label), image_size, rng)
  return ImageSet(images, labels, np.asarray([str(i) for i in range(num_images)]),
                  PBC_CLASS_NAMES, name=f"synthetic(seed={seed}, n={num_images})",
                  synthetic=True)


class _Canvas:
  """A float RGB image painted with soft-edged ellipses; coordinates in [0, 1]."""

  def __init__(self, size, rng):
    self.rng = rng
    self.y, self.x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    self.pixels = np.broadcast_to(_BACKGROUND * rng.uniform(0.95, 1.03), (size, size, 3)).copy()
    self.edge = 1.5 / size

  def ellipse(self, cx, cy, rx, ry, angle, color, opacity=1.0):
    """Paints a soft-edged ellipse, touching only the pixels of its bounding box."""
    size = self.pixels.shape[0]
    reach = max(rx, ry) + 2 * self.edge
    y0, y1 = (np.clip([cy - reach, cy + reach], 0, 1) * size).astype(int) + [0, 1]
    x0, x1 = (np.clip([cx - reach, cx + reach], 0, 1) * size).astype(int) + [0, 1]
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = self.x[y0:y1, x0:x1] - cx, self.y[y0:y1, x0:x1] - cy
    u, v = (c * dx + s * dy) / rx, (-s * dx + c * dy) / ry
    dist = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)
    alpha = (np.clip(0.5 - dist / self.edge, 0.0, 1.0) * opacity)[..., None]
    color = np.clip(color * self.rng.uniform(0.9, 1.1, 3), 0, 255)
    region = self.pixels[y0:y1, x0:x1]
    self.pixels[y0:y1, x0:x1] = region * (1 - alpha) + color * alpha

  def blob(self, cx, cy, r, color, opacity=1.0, squash=(0.8, 1.2)):
    rx, ry = r * self.rng.uniform(*squash), r * self.rng.uniform(*squash)
    self.ellipse(cx, cy, rx, ry, self.rng.uniform(0, np.pi), color, opacity)

  def granules(self, cx, cy, r, count, size, color, opacity=0.9):
    angles = self.rng.uniform(0, 2 * np.pi, count)
    radii = r * np.sqrt(self.rng.uniform(0, 1, count))
    for a, d in zip(angles, radii):
      self.blob(cx + d * np.cos(a), cy + d * np.sin(a), size, color, opacity)


def _draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
  canvas = _Canvas(size, rng)
  for _ in range(rng.integers(2, 6)):  # red cells around the cell of interest
    cx, cy = rng.uniform(0, 1, 2)
    canvas.blob(cx, cy, rng.uniform(0.1, 0.16), _RED_CELL, 0.8, squash=(0.9, 1.1))
  cx, cy = 0.5 + rng.uniform(-0.06, 0.06, 2)
  _CELL_PAINTERS[label](canvas, cx, cy, rng)
  noise = rng.normal(0, 4, canvas.pixels.shape)
  return np.clip(canvas.pixels + noise, 0, 255).astype(np.uint8)


def _basophil(c, cx, cy, rng):
  r = rng.uniform(0.2, 0.25)
  c.blob(cx, cy, r, np.array([170, 140, 190.]))
  c.blob(cx, cy, r * 0.6, _NUCLEUS)
  c.granules(cx, cy, r * 0.9, rng.integers(25, 40), r * 0.1, _DARK_NUCLEUS)


def _eosinophil(c, cx, cy, rng):
  r = rng.uniform(0.23, 0.28)
  c.blob(cx, cy, r, np.array([230, 150, 110.]))
  c.granules(cx, cy, r * 0.9, rng.integers(40, 60), r * 0.07, np.array([215, 95, 60.]))
  a = rng.uniform(0, np.pi)
  for sign in (-1, 1):
    c.blob(cx + sign * 0.4 * r * np.cos(a), cy + sign * 0.4 * r * np.sin(a), r * 0.3, _NUCLEUS)


def _erythroblast(c, cx, cy, rng):
  r = rng.uniform(0.13, 0.17)
  c.blob(cx, cy, r, np.array([180, 150, 190.]), squash=(0.95, 1.05))
  c.blob(cx + rng.uniform(-0.2, 0.2) * r, cy, r * 0.7, _DARK_NUCLEUS, squash=(0.95, 1.05))


def _immature_granulocyte(c, cx, cy, rng):
  r = rng.uniform(0.27, 0.32)
  c.blob(cx, cy, r, np.array([200, 170, 200.]))
  c.granules(cx, cy, r * 0.9, rng.integers(10, 20), r * 0.06, np.array([160, 90, 150.]))
  a = rng.uniform(0, 2 * np.pi)
  c.ellipse(cx, cy, r * 0.65, r * 0.45, a, _NUCLEUS)
  notch = (cx + 0.45 * r * np.cos(a + np.pi / 2), cy + 0.45 * r * np.sin(a + np.pi / 2))
  c.blob(*notch, r * 0.2, np.array([200, 170, 200.]))


def _lymphocyte(c, cx, cy, rng):
  r = rng.uniform(0.16, 0.2)
  c.blob(cx, cy, r, np.array([150, 170, 215.]), squash=(0.9, 1.1))
  c.blob(cx + rng.uniform(-0.1, 0.1) * r, cy, r * 0.82, _NUCLEUS, squash=(0.9, 1.1))


def _monocyte(c, cx, cy, rng):
  r = rng.uniform(0.28, 0.34)
  c.blob(cx, cy, r, np.array([175, 170, 200.]), squash=(0.85, 1.15))
  c.granules(cx, cy, r * 0.8, rng.integers(3, 7), r * 0.08, np.array([225, 215, 230.]))
  a = rng.uniform(0, 2 * np.pi)
  for t in np.linspace(-1.2, 1.2, 7):  # a folded, horseshoe nucleus
    c.blob(cx + 0.35 * r * np.cos(a + t), cy + 0.35 * r * np.sin(a + t), r * 0.26,
           np.array([120, 80, 150.]), squash=(0.9, 1.1))


def _neutrophil(c, cx, cy, rng):
  r = rng.uniform(0.23, 0.27)
  c.blob(cx, cy, r, np.array([220, 190, 205.]))
  a0 = rng.uniform(0, 2 * np.pi)
  lobes = rng.integers(3, 5)
  for k in range(lobes):
    a = a0 + 2 * np.pi * k / lobes
    c.blob(cx + 0.45 * r * np.cos(a), cy + 0.45 * r * np.sin(a), r * 0.22, _NUCLEUS)


def _platelet(c, cx, cy, rng):
  for _ in range(rng.integers(2, 6)):
    c.blob(cx + rng.uniform(-0.15, 0.15), cy + rng.uniform(-0.15, 0.15),
           rng.uniform(0.03, 0.05), np.array([150, 100, 175.]), squash=(0.6, 1.4))


_CELL_PAINTERS = (_basophil, _eosinophil, _erythroblast, _immature_granulocyte,
                  _lymphocyte, _monocyte, _neutrophil, _platelet)
