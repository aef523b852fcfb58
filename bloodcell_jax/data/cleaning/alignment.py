"""The pixel check that confirms a near-duplicate candidate.

Thumbnails only say that two images look alike from afar; many different cells
do. A copy also matches in fine detail (granules, membrane edges) once aligned.
So both images are band-passed (a difference of Gaussians keeps detail between
JPEG noise and the overall shape), the candidate's flip/turn is undone, the
translation is found by phase correlation (then refined by one pixel each way),
and the similarity is the normalised correlation of the aligned detail over the
central window. Copies score above 0.95; different cells of the same class
stay below 0.75 on the PBC images.
"""

import concurrent.futures
import os

import numpy as np
from scipy import ndimage

from bloodcell_jax.data.cleaning import fingerprints as fp

BATCH = 256  # pairs per vectorised batch
_FINE_SIGMA, _COARSE_SIGMA = 1.0, 4.0


def band_pass(lum: np.ndarray) -> np.ndarray:
  """Detail of (N, H, W) luma between fine noise and the coarse shape."""
  blur = lambda sigma: ndimage.gaussian_filter(lum, (0, sigma, sigma), mode="nearest",
                                               truncate=3.0)
  fine, coarse = blur(_FINE_SIGMA), blur(_COARSE_SIGMA)
  return fine - coarse


def similarities(images_a: np.ndarray, images_b: np.ndarray, a: np.ndarray, b: np.ndarray,
                 g: np.ndarray, max_shift: int):
  """(similarity, dy, dx) of each pair: image b[i] turned by g[i] against image a[i].

  (dy, dx) is the shift that moves the turned b onto a. Each image's detail is
  computed once, however many pairs it is in.
  """
  if images_b is images_a:
    detail_a, where_a = detail_b, where_b = _details(images_a, np.concatenate([a, b]))
  else:
    detail_a, where_a = _details(images_a, a)
    detail_b, where_b = _details(images_b, b)
  sims = np.empty(len(a), np.float32)
  shifts = np.empty((len(a), 2), np.int32)

  def check(start):
    part = slice(start, start + BATCH)
    first = detail_a[np.searchsorted(where_a, a[part])].astype(np.float32)
    second = detail_b[np.searchsorted(where_b, b[part])].astype(np.float32)
    turned = np.stack([fp.dihedral(x, int(t)) for x, t in zip(second, g[part])])
    sims[part], shifts[part] = _aligned_similarity(first, turned, max_shift)

  # numpy's FFTs and reductions release the GIL: batches run on every core.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    list(pool.map(check, range(0, len(a), BATCH)))
  return sims, shifts[:, 0], shifts[:, 1]


def _details(images, indices):
  """(band-passed luma of each distinct image in `indices`, float16; those images, sorted)."""
  distinct = np.unique(indices)
  out = np.empty((len(distinct), fp.WORK_SIZE, fp.WORK_SIZE), np.float16)
  for start in range(0, len(distinct), fp.CHUNK):
    chunk = distinct[start:start + fp.CHUNK]
    out[start:start + len(chunk)] = band_pass(fp.luma(images[chunk]))
  return out, distinct


def _aligned_similarity(detail_a, detail_b, max_shift):
  """Best correlation over the phase-correlation shift and its 8 neighbours."""
  dy, dx = phase_correlation(detail_a, detail_b, max_shift)
  dy, dx = np.clip(dy, 1 - max_shift, max_shift - 1), np.clip(dx, 1 - max_shift, max_shift - 1)
  values = windowed_correlations(detail_a, detail_b, dy, dx, max_shift)  # (N, 3, 3)
  best = values.reshape(len(values), -1).argmax(axis=1)
  ey, ex = np.divmod(best, 3)
  shifts = np.stack([dy + ey - 1, dx + ex - 1], axis=1)
  return values.reshape(len(values), -1)[np.arange(len(values)), best], shifts


def phase_correlation(a: np.ndarray, b: np.ndarray, max_shift: int):
  """Integer (dy, dx) with a(y, x) ~ b(y - dy, x - dx), searched within +-max_shift."""
  size = a.shape[-1]
  window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
  fa = np.fft.rfft2(a * window)
  fb = np.fft.rfft2(b * window)
  cross = fa * np.conj(fb)
  surface = np.fft.irfft2(cross / (np.abs(cross) + 1e-6), s=a.shape[-2:])
  offsets = np.arange(size)
  offsets = np.where(offsets > size // 2, offsets - size, offsets)
  inside = np.abs(offsets) <= max_shift
  surface = np.where(inside[None, :, None] & inside[None, None, :], surface, -np.inf)
  peak = surface.reshape(len(a), -1).argmax(axis=1)
  return offsets[peak // size], offsets[peak % size]


def windowed_correlations(a, b, dy, dx, max_shift):
  """(N, 3, 3) normalised correlations of a's central window with b's, for shifts
  (dy + ey, dx + ex), ey and ex in (-1, 0, 1); b is read once per pair."""
  size = a.shape[-1]
  margin = max_shift + 1
  width = size - 2 * margin
  steps = np.arange(width + 2)
  rows = (margin - dy - 1)[:, None] + steps[None, :]
  cols = (margin - dx - 1)[:, None] + steps[None, :]
  pairs = np.arange(len(a))[:, None, None]
  around = b[pairs, rows[:, :, None], cols[:, None, :]]  # (N, width + 2, width + 2)
  window_a = a[:, margin:size - margin, margin:size - margin]
  window_a = window_a - window_a.mean(axis=(1, 2), keepdims=True)
  norm_a = np.sqrt((window_a ** 2).sum(axis=(1, 2)))
  out = np.empty((len(a), 3, 3), np.float32)
  for ey in range(3):
    for ex in range(3):
      # a(y) ~ b(y - shift): a larger shift reads b further up and left.
      window_b = around[:, 2 - ey:2 - ey + width, 2 - ex:2 - ex + width]
      window_b = window_b - window_b.mean(axis=(1, 2), keepdims=True)
      numerator = (window_a * window_b).sum(axis=(1, 2))
      denominator = norm_a * np.sqrt((window_b ** 2).sum(axis=(1, 2)))
      out[:, ey, ex] = numerator / np.maximum(denominator, 1e-6)
  return out
