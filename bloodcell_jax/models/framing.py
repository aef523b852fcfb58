"""Framing: every image re-cut so that the white cell's nucleus sits in the centre at one size.

Labs frame their crops differently: the same cell fills two thirds of a PBC image and a
third of a LISC one (docs/other-labs.md has the measurements). The model sees scale as a
class cue, so a smaller cell reads as a different class. Framing removes the difference
before the network, inside the model, so that training, evaluation, prediction and exports
all see the same input.

The nucleus is found by colour, not by a learned detector: in optical density (OD, the
Beer-Lambert absorbance of each channel against the image's own background) a nucleus
stained by azure/haematoxylin absorbs green far more than blue, red cells only a little more
(PBC's pink ones) or evenly (LISC's grey ones), and plasma and dark borders evenly. Where
OD_green - OD_blue exceeds half its maximum in the image, the excess weights the nucleus; its
centroid and radius of gyration give the crop's centre and scale. An image without a nucleus
(platelets) is framed about whatever is most purple in it, the same in training and use.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.models import portable

FRAMINGS = ("none", "nucleus")

# The nucleus's radius of gyration as a fraction of the image side after framing: the median
# of the PBC training images (18.7 pixels of 96), so that PBC images keep their framing.
NUCLEUS_SPREAD = 0.195
# Zoom limits: a failed detection (no nucleus, as in a platelet image) cannot blow a crop up
# or shrink it away.
ZOOM_RANGE = (0.7, 2.5)
# The most the centre may move, as a fraction of the side: the crops are already roughly
# centred, and a far-off purple object (a neighbour's nucleus at the edge) must not win.
MAX_SHIFT = 0.25
# Measure-and-crop passes. One leaves the nucleus 3-6% small (the resampled edge is softer);
# the second corrects it, and added 3-5 points on two other labs to a run trained with one
# (docs/other-labs.md); a third changes little.
FRAMING_PASSES = 2


def block_mean(x, size: int):
  """Means over non-overlapping size x size blocks of (B, H, W, ...) arrays (a last partial
  block dropped): a reshape and a mean, which every export format converts and XLA runs
  fast (a reduce_window is slow on CPU and stays a StableHLO op that ONNX cannot read)."""
  height, width = x.shape[1] // size * size, x.shape[2] // size * size
  x = jax.lax.slice_in_dim(jax.lax.slice_in_dim(x, 0, height, axis=1), 0, width, axis=2)
  blocks = x.reshape(x.shape[0], height // size, size, width // size, size, *x.shape[3:])
  return blocks.mean(axis=(2, 4))


def background(x):
  """Each image's background colour, (B, 1, 1, 3): the brightest 4x4 block per channel (plasma
  between the cells; a block's mean ignores single hot pixels)."""
  return block_mean(x, 4).max(axis=(1, 2), keepdims=True)


def optical_density(x, fill):
  """Per channel, the Beer-Lambert absorbance of float images in [0, 255] against their
  background colour `fill` (B, 1, 1, 3); 0 where a pixel is brighter than the background."""
  return jax.nn.relu(jnp.log((fill + 1.0) / (x + 1.0)))


def nucleus_weights(x, fill=None):
  """(B, H, W) non-negative weights, large on the nucleus, for float images in [0, 255] and
  their `background` colour `fill` (computed when not given)."""
  # OD_green - OD_blue = log((blue + 1) / (green + 1)) less the same of the background. A
  # channel as a weighted sum, not indexing: a channel of a dynamic batch exports as a gather,
  # which LiteRT cannot convert.
  def channel(y, c):
    return (y * jnp.eye(3, dtype=y.dtype)[c]).sum(axis=-1)
  fill = background(x) if fill is None else fill
  purple = jax.nn.relu(jnp.log((channel(x, 2) + 1.0) / (channel(x, 1) + 1.0))
                       - jnp.log((channel(fill, 2) + 1.0) / (channel(fill, 1) + 1.0)))
  # The peak of 2x2 means, sliding (a small nucleus may straddle blocks): robust to one dark
  # pixel, not to a nucleus of four.
  def shifted(dy, dx):
    height, width = purple.shape[1] - 1, purple.shape[2] - 1
    return jax.lax.slice(purple, (0, dy, dx), (purple.shape[0], dy + height, dx + width))
  peak = ((shifted(0, 0) + shifted(0, 1) + shifted(1, 0) + shifted(1, 1)) / 4.0).max(
      axis=(1, 2), keepdims=True)
  return jax.nn.relu(purple - 0.5 * peak)


def nucleus_geometry(x, fill=None):
  """Centroid row and column (B,) and radius of gyration (B,), in pixels, of the nucleus
  weights; an image without any weight gets the image centre and the target size."""
  weights = nucleus_weights(x, fill)
  height, width = x.shape[1:3]
  rows = jnp.arange(height, dtype=x.dtype)[None, :, None]
  cols = jnp.arange(width, dtype=x.dtype)[None, None, :]
  total = weights.sum(axis=(1, 2))
  found = total > 1e-6
  safe = jnp.where(found, total, 1.0)
  cy = (weights * rows).sum(axis=(1, 2)) / safe
  cx = (weights * cols).sum(axis=(1, 2)) / safe
  spread = (weights * (jnp.square(rows - cy[:, None, None])
                       + jnp.square(cols - cx[:, None, None]))).sum(axis=(1, 2)) / safe
  radius = jnp.where(found, jnp.sqrt(spread), NUCLEUS_SPREAD * min(height, width))
  return (jnp.where(found, cy, (height - 1) / 2), jnp.where(found, cx, (width - 1) / 2), radius)


def crop_about(cy, cx, radius, height: int, width: int):
  """The zoom (B,) and row and column shifts (B,) that put a nucleus at (cy, cx) of `radius`
  pixels in the centre at NUCLEUS_SPREAD of the side (within ZOOM_RANGE and MAX_SHIFT)."""
  zoom = jnp.clip(NUCLEUS_SPREAD * min(height, width) / jnp.maximum(radius, 1.0), *ZOOM_RANGE)

  def shift(centroid, size):
    # Output pixel p samples input (p + 0.5 - shift) / zoom - 0.5: the focus lands on the centre.
    centre = (size - 1) / 2
    focus = centre + jnp.clip(centroid - centre, -MAX_SHIFT * size, MAX_SHIFT * size)
    return centre + 0.5 - zoom * (focus + 0.5)

  return zoom, shift(cy, height), shift(cx, width)


def frame_cells(x, passes: int = FRAMING_PASSES):
  """Float images (B, H, W, 3) in [0, 255], each zoomed about its nucleus so that the nucleus's
  radius of gyration is NUCLEUS_SPREAD of the side, centred (within MAX_SHIFT). Where the
  crop reaches past the image, the image's background colour fills it.

  Each pass after the first measures the nucleus again in the framed image (where the half-
  maximum threshold sees it at the target size, without the far edges) and corrects the crop;
  the image is resampled from the original every time, so it is blurred once."""
  x = jax.lax.stop_gradient(x)
  height, width = x.shape[1:3]
  fill = background(x)
  # Resampling the difference from the background leaves the background outside the image.
  crop = crop_about(*nucleus_geometry(x, fill), height, width)
  for _ in range(passes - 1):
    zoom, row_shift, col_shift = crop
    cy, cx, radius = nucleus_geometry(resample(x - fill, *crop) + fill, fill)
    # Back to the original's pixels: framed pixel p shows original (p + 0.5 - shift) / zoom - 0.5.
    crop = crop_about((cy + 0.5 - row_shift) / zoom - 0.5, (cx + 0.5 - col_shift) / zoom - 0.5,
                      radius / zoom, height, width)
  return resample(x - fill, *crop) + fill


def resampling_matrix(size: int, zoom, shift):
  """(B, size, size) weights: output pixel p of each image is the linear interpolation of the
  input at (p + 0.5 - shift) / zoom - 0.5, the triangle widened by 1 / zoom when shrinking
  (antialiasing). Each row sums to one over the inputs the triangle reaches, including those
  past the image, which get no weight: the image fades to zero there."""
  width = jnp.maximum(1.0, 1.0 / zoom)[:, None, None]
  out = jnp.arange(size, dtype=zoom.dtype)[None, :, None]
  source = (out + 0.5 - shift[:, None, None]) / zoom[:, None, None] - 0.5
  reach = int(np.ceil(1.0 / ZOOM_RANGE[0]))
  inputs = jnp.arange(-reach, size + reach, dtype=zoom.dtype)[None, None, :]
  weights = jax.nn.relu(1.0 - jnp.abs(inputs - source) / width)
  weights = weights / jnp.maximum(weights.sum(axis=-1, keepdims=True), 1e-6)
  return jax.lax.slice_in_dim(weights, reach, reach + size, axis=2)


def resample(x, zoom, row_shift, col_shift):
  """Images (B, H, W, C) zoomed by `zoom` (B,) and shifted by `row_shift` and `col_shift` (B,)
  pixels: each axis a product with its resampling matrix."""
  rows = resampling_matrix(x.shape[1], zoom, row_shift)  # (B, out row, in row)
  cols = resampling_matrix(x.shape[2], zoom, col_shift)  # (B, out col, in col)
  if portable.enabled():
    # For export, broadcast products and sums: a batched matmul with a dynamic batch does not
    # survive the conversion from LiteRT to ONNX (nor does jax.image.scale_and_translate's).
    x = (rows[:, :, :, None, None] * x[:, None, :, :, :]).sum(axis=2)
    return (cols[:, None, :, :, None] * x[:, :, None, :, :]).sum(axis=3)
  x = jnp.einsum("bph,bhwc->bpwc", rows, x)
  return jnp.einsum("bqw,bpwc->bpqc", cols, x)


def apply_framing(x, method: str):
  if method == "none":
    return x
  if method == "nucleus":
    return frame_cells(x)
  raise ValueError(f"framing {method!r}: expected one of {', '.join(FRAMINGS)}")
