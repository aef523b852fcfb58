"""Cell images and ImageFolders for the cleaning tests: a sample of the real images where
../shared/data/pbc96 holds them, else generated cells with a texture of their own."""

import hashlib
import os

import ml_collections
import numpy as np
from PIL import Image
from scipy import ndimage

from bloodcell_jax.data import image_set, sources, synthetic
from helpers import PBC96, injection


def cells(n, seed=0):
  """n generated cells, or a seeded sample of the real images (n / 8 per class) if present:
  (images, labels, where they came from)."""
  if os.path.isdir(PBC96):
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for label, name in enumerate(image_set.PBC_CLASS_NAMES):
      files = sorted(os.listdir(os.path.join(PBC96, name)))
      picked = np.sort(rng.choice(len(files), n // 8 + (label < n % 8), replace=False))
      paths += [os.path.join(PBC96, name, files[i]) for i in picked]
      labels += [label] * len(picked)
    order = rng.permutation(len(paths))  # classes mixed, as in the generated set
    images = np.stack([sources.read_image_file(paths[i], 96)[0] for i in order])
    return images, np.asarray(labels, np.int32)[order], "pbc96 sample"
  data = synthetic.generate(n, 96, seed=seed)
  # The generator draws smooth shapes; real smears have fine texture, which is what tells
  # two similar cells apart. Give each image its own.
  rng = np.random.default_rng(seed)
  texture = ndimage.gaussian_filter(rng.normal(0, 1, data.images.shape[:3]).astype(np.float32),
                                    (0, 1.5, 1.5))
  texture *= 8.0 / texture.std()
  images = np.clip(data.images + texture[..., None], 0, 255).astype(np.uint8)
  return images, data.labels, "generated"


def as_image_set(images, labels, ids=None, name="test"):
  """An ImageSet of the PBC classes; ids "0", "1", ... unless given."""
  ids = np.asarray(ids if ids is not None else [str(i) for i in range(len(images))])
  return image_set.ImageSet(images, np.asarray(labels, np.int32), ids, image_set.PBC_CLASS_NAMES,
                            name=name)


def data_config(train, cache_dir, **cleaning):
  """config.data for training on `train` with cleaning on (cached under `cache_dir`), a quarter
  for validation."""
  return ml_collections.ConfigDict({
      "train": train, "val": "", "test": "", "val_fraction": 0.25,
      "class_names": image_set.PBC_CLASS_NAMES, "synthetic_size": 0, "clean": True,
      "cleaning": {"cache_dir": str(cache_dir), "keep_file": "", **cleaning}})


def write_folder(root, images, labels, names=None, fmt="JPEG"):
  """An ImageFolder of the PBC classes; returns the relative ids in write order."""
  ids = []
  for k, (image, label) in enumerate(zip(images, labels)):
    name = names[k] if names else f"img_{k:04d}.{'jpg' if fmt == 'JPEG' else 'png'}"
    rel = os.path.join(image_set.PBC_CLASS_NAMES[label], name)
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    Image.fromarray(image).save(os.path.join(root, rel), fmt, **(
        {"quality": 95} if fmt == "JPEG" else {}))
    ids.append(rel)
  return ids


def snapshot(root):
  """Bytes digest and mtime of every file under root."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      path = os.path.join(d, f)
      with open(path, "rb") as handle:
        out[path] = (hashlib.md5(handle.read()).hexdigest(), os.stat(path).st_mtime_ns)
  return out


def write_dirty_folder(root):
  """An ImageFolder at `root` with an exact copy in another format, a conflict and near
  copies: (root, the clean images' ids, {kind of copy: its id})."""
  images, labels, _ = cells(60, seed=1)
  ids = write_folder(root, images, labels)
  decoded = [np.asarray(Image.open(os.path.join(root, i)).convert("RGB")) for i in ids]
  rng = np.random.default_rng(0)
  extra = {
      # Same decoded pixels, other bytes (PNG): an exact duplicate.
      "exact_png": (decoded[3], labels[3], "copy_of_3.png", "PNG"),
      # The same image filed under another class: a label conflict.
      "conflict": (decoded[5], (labels[5] + 1) % 8, "also_5.png", "PNG"),
      "flip": (np.ascontiguousarray(decoded[7][:, ::-1]), labels[7], "flip_7.png", "PNG"),
      "rot90": (np.ascontiguousarray(np.rot90(decoded[9])), labels[9], "rot_9.png", "PNG"),
      "jpeg70": (injection.jpeg(decoded[11], 70), labels[11], "q70_11.jpg", "JPEG"),
      "shift": (injection.shifted(decoded[13], 3, -2), labels[13], "shift_13.png", "PNG"),
      "nudged": (injection.near_copy(decoded[15], "brightness_contrast", rng), labels[15],
                 "bright_15.png", "PNG"),
  }
  extra_ids = {}
  for key, (image, label, name, fmt) in extra.items():
    extra_ids[key] = write_folder(root, [image], [label], [name], fmt)[0]
  return root, ids, extra_ids
