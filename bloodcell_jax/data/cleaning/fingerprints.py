"""Per-image fingerprints: exact pixel digests and alignment-invariant thumbnails.

Exact duplicates share a digest of their decoded pixels, whatever their file
bytes. Near duplicates share a thumbnail once both are aligned: the thumbnail is
cut around the image's centre of stain mass (so a shift of a few pixels moves
the crop with the content), averaged down to 8x8 (so re-encoding and resizing
barely matter) and standardised (so brightness and contrast do not). Flips and
90-degree turns are handled by comparing each image with the 8 dihedral
transforms of the others' thumbnails.
"""

import hashlib

import numpy as np
from PIL import Image

WORK_SIZE = 96  # images of other sizes are resampled to this before fingerprinting
GRID = 48  # the thumbnails are cut from a half-resolution luma image
CROP = 32  # side of the aligned crop, on GRID
THUMB = 8  # the thumbnail is THUMB x THUMB block means of the crop
CHUNK = 128  # images per vectorised batch: temporaries of a few MB, which stay in cache
# (at 1024 a first call took 2-5x longer, its 300 MB of temporaries faulted in afresh)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Dihedral transform g of an (..., H, W) array: rotate by 90 degrees g // 2 times,
# then mirror left-right when g is odd.
NUM_ORIENTATIONS = 8
ORIENTATION_NAMES = ("identity", "flip", "rot90", "rot90+flip", "rot180", "rot180+flip",
                     "rot270", "rot270+flip")


def pixel_digests(images: np.ndarray) -> np.ndarray:
  """A 128-bit digest of each image's decoded pixels (and shape)."""
  shape = repr(images.shape[1:]).encode()
  return np.asarray([hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16,
                                     key=shape).hexdigest() for image in images])


def dihedral(array: np.ndarray, g: int) -> np.ndarray:
  turned = np.rot90(array, g // 2, axes=(-2, -1))
  return turned[..., ::-1] if g % 2 else turned


def _inverse_table():
  probe = np.arange(6).reshape(2, 3)
  table = []
  for g in range(NUM_ORIENTATIONS):
    moved = dihedral(probe, g)
    table.append(next(h for h in range(NUM_ORIENTATIONS)
                      if dihedral(moved, h).shape == probe.shape
                      and np.array_equal(dihedral(moved, h), probe)))
  return tuple(table)


INVERSE = _inverse_table()  # INVERSE[g] undoes dihedral(., g)


def luma(images: np.ndarray) -> np.ndarray:
  """(N, WORK_SIZE, WORK_SIZE) float32 luma in [0, 255]."""
  images = at_work_size(images)
  # Channel by channel: a matmul with a 3-vector is 10x slower on (N, H, W, 3).
  return (images[..., 0] * _LUMA[0] + images[..., 1] * _LUMA[1]
          + images[..., 2] * _LUMA[2])


def at_work_size(images: np.ndarray) -> np.ndarray:
  """uint8 (N, 96, 96, 3): the images, bilinearly resampled when they are another size."""
  if images.shape[1:3] == (WORK_SIZE, WORK_SIZE):
    return images
  return np.stack([np.asarray(Image.fromarray(image).resize((WORK_SIZE, WORK_SIZE),
                                                            Image.BILINEAR))
                   for image in images])


def aligned_thumbnails(images: np.ndarray):
  """(thumbnails (N, 64) float32 standardised, centres (N, 2) on the 96 grid)."""
  thumbs = np.empty((len(images), THUMB * THUMB), np.float32)
  centres = np.empty((len(images), 2), np.float32)
  for start in range(0, len(images), CHUNK):
    grid = _half_resolution(luma(images[start:start + CHUNK]))
    cy, cx = stain_centres(grid)
    crops = _bilinear_crops(grid, cy, cx, CROP)
    block = CROP // THUMB
    small = crops.reshape(len(crops), THUMB, block, THUMB, block).mean(axis=(2, 4))
    thumbs[start:start + CHUNK] = standardise(small.reshape(len(small), -1))
    centres[start:start + CHUNK] = np.stack([cy, cx], axis=1) * (WORK_SIZE / GRID)
  return thumbs, centres


def oriented(thumbs: np.ndarray, g: int) -> np.ndarray:
  """The thumbnails of every image turned/flipped by dihedral transform g."""
  square = thumbs.reshape(len(thumbs), THUMB, THUMB)
  return np.ascontiguousarray(dihedral(square, g)).reshape(len(thumbs), -1)


def standardise(vectors: np.ndarray) -> np.ndarray:
  centred = vectors - vectors.mean(axis=1, keepdims=True)
  return centred / (centred.std(axis=1, keepdims=True) + 1e-3)


def stain_centres(grid: np.ndarray, window: float = 8.0, iterations: int = 3):
  """Centre of the dark (stained) mass of each image, by a few mean-shift steps.

  Mass is darkness below the image's own bright background (its 90th percentile),
  to the 4th power so that nuclei dominate and pale red cells (which a shift
  moves in and out of the frame) barely count. Each step re-weights the mass by a Gaussian
  window around the last centre, so that content entering or leaving at the
  border (after a shift) barely moves the centre.
  """
  n, size = grid.shape[0], grid.shape[1]
  flat = grid.reshape(n, -1)
  bright = np.quantile(flat, 0.9, axis=1)[:, None, None]
  dark = np.quantile(flat, 0.01, axis=1)[:, None, None]
  mass = (np.clip(bright - grid, 0, None) / (bright - dark + 1e-3)) ** 4
  coords = np.arange(size, dtype=np.float32)
  cy = np.full(n, (size - 1) / 2, np.float32)
  cx = cy.copy()
  for step in range(iterations + 1):
    weights = mass
    if step:
      wy = np.exp(-0.5 * ((coords[None, :] - cy[:, None]) / window) ** 2)
      wx = np.exp(-0.5 * ((coords[None, :] - cx[:, None]) / window) ** 2)
      weights = mass * wy[:, :, None] * wx[:, None, :]
    total = weights.sum(axis=(1, 2))
    empty = total < 1e-6  # blank images: stay at the middle
    total = np.where(empty, 1.0, total)
    cy = np.where(empty, cy, (weights.sum(axis=2) * coords).sum(axis=1) / total)
    cx = np.where(empty, cx, (weights.sum(axis=1) * coords).sum(axis=1) / total)
  return cy.astype(np.float32), cx.astype(np.float32)


def _half_resolution(lum: np.ndarray) -> np.ndarray:
  n, size = lum.shape[0], lum.shape[1]
  factor = size // GRID
  return lum.reshape(n, GRID, factor, GRID, factor).mean(axis=(2, 4))


def _bilinear_crops(grid: np.ndarray, cy: np.ndarray, cx: np.ndarray, size: int):
  """(N, size, size) crops centred on (cy, cx), bilinear, clamped at the border."""
  n, limit = grid.shape[0], grid.shape[1] - 1
  offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2
  ys = np.clip(cy[:, None] + offsets[None, :], 0, limit)
  xs = np.clip(cx[:, None] + offsets[None, :], 0, limit)
  y0, x0 = np.floor(ys).astype(np.int32), np.floor(xs).astype(np.int32)
  y1, x1 = np.minimum(y0 + 1, limit), np.minimum(x0 + 1, limit)
  fy, fx = (ys - y0)[:, :, None], (xs - x0)[:, None, :]
  rows = np.arange(n)[:, None, None]

  def at(yy, xx):
    return grid[rows, yy[:, :, None], xx[:, None, :]]
  top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
  bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
  return top * (1 - fy) + bottom * fy
