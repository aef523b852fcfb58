"""Offline augmentation: K augmented copies of each training image, made once and cached.

The study's proposed next step: a larger training set of fixed augmented images, on
top of which the online augmentation still runs. The copies depend only on the
images, the pipeline string, K and the seed; they are cached in a file named by a
fingerprint of all four, so a resumed or repeated run reads them back instead of
making them again.
"""

import dataclasses
import hashlib
import logging
import os
import time

import numpy as np

from bloodcell_jax.augment import ops as augment
from bloodcell_jax.data.image_set import ImageSet
from bloodcell_jax.errors import UserError

_BATCH = 256


def fingerprint(data: ImageSet, spec: str, copies: int, seed: int) -> str:
  digest = hashlib.sha256()
  for part in (spec.encode(), str(copies).encode(), str(seed).encode(),
               np.ascontiguousarray(data.images).tobytes(), data.labels.tobytes()):
    digest.update(hashlib.sha256(part).digest())
  return digest.hexdigest()[:16]


def copy_seeds(seed: int, copy: int, num_images: int) -> np.ndarray:
  """One stateless seed per image and copy; apart from the training stream's seeds."""
  return np.stack([np.full(num_images, seed, np.int64),
                   (np.int64(copy + 1) << 32) + np.arange(num_images, dtype=np.int64)], 1)


def make_copies(data: ImageSet, spec: str, copies: int, seed: int,
                where: str = "config.data.offline_augment") -> np.ndarray:
  """(copies * N, H, W, 3) uint8: copy k of every image, then copy k + 1."""
  pipe = augment.parse(spec, where)
  if pipe.mixes_batch:
    raise UserError(f"{where}: mixup and cutmix mix batches; offline copies take per-image "
                    "ops only")
  out = np.empty((copies * len(data),) + data.images.shape[1:], np.uint8)
  for k in range(copies):
    seeds = copy_seeds(seed, k, len(data))
    for start in range(0, len(data), _BATCH):
      stop = min(start + _BATCH, len(data))
      images = pipe.apply_with_seeds(data.images[start:stop], seeds[start:stop])["image"]
      out[k * len(data) + start:k * len(data) + stop] = np.clip(
          np.round(images.numpy()), 0, 255).astype(np.uint8)
  return out


def with_copies(data: ImageSet, copies: int, spec: str, seed: int, cache_dir: str):
  """`data` followed by its augmented copies (ids `<id>#aug<k>`); returns (ImageSet, summary)."""
  if copies < 0:
    raise UserError(f"config.data.offline_copies={copies}: expected 0 or more")
  if not copies:
    return data, {"copies": 0}
  path = os.path.join(cache_dir, f"offline_{fingerprint(data, spec, copies, seed)}.npz")
  started = time.perf_counter()
  if os.path.isfile(path):
    with np.load(path) as cached:
      images = cached["images"]
    logging.info("offline augmentation: %d copies read from %s", copies, path)
  else:
    images = make_copies(data, spec, copies, seed)
    os.makedirs(cache_dir, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(temporary, images=images)
    os.replace(temporary, path)  # whole or absent, even if interrupted
    logging.info("offline augmentation: %d copies of %d images made in %.1f s, cached in %s",
                 copies, len(data), time.perf_counter() - started, path)
  ids = np.concatenate([data.ids] + [np.char.add(data.ids.astype(str), f"#aug{k + 1}")
                                     for k in range(copies)])
  extended = dataclasses.replace(
      data, images=np.concatenate([data.images, images]),
      labels=np.tile(data.labels, copies + 1), ids=ids)
  return extended, {"copies": copies, "augmentation": spec, "cache": path,
                    "num_original": len(data), "num_total": len(extended)}
