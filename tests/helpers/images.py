"""Generated images, image sets and folders (and real ones where ../shared/data holds them)."""

import os

import numpy as np
from PIL import Image

from bloodcell_jax.data import image_set, sources, synthetic
from helpers import PBC96


def write_image_folder(root, images_per_class=4, size=24, classes=("a", "b", "c"), seed=0):
  """An ImageFolder of random PNGs (and a README beside the class folders)."""
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "README.md"), "w") as f:
    f.write("not an image\n")
  for name in classes:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(images_per_class):
      pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, name, f"{name}_{i}.png"))
  return root


def tiny_set(n=10, size=16, num_classes=3):
  """An ImageSet of `n` random images, labels 0, 1, ... in turn."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return image_set.ImageSet(images, labels, np.asarray([str(i) for i in range(n)]),
                            tuple("abc"[:num_classes]), name="tiny")


def sixteen_cells(size: int) -> np.ndarray:
  """Two real images of each PBC class at `size`; generated cells without the data."""
  if not os.path.isdir(PBC96):
    return synthetic.generate(16, size).images
  images = []
  for name in image_set.PBC_CLASS_NAMES:
    folder = os.path.join(PBC96, name)
    for file in sorted(os.listdir(folder))[:2]:
      images.append(sources.read_image_file(os.path.join(folder, file), size)[0])
  return np.stack(images)


def write_folder_and_keep_file(root):
  """A 48-image ImageFolder of the PBC classes under root/data (PNG, 6 per class) and a
  root/keep.txt that drops 8 of them: (root, {id: pixels}, the kept ids in order)."""
  data = synthetic.generate(48, 96, seed=3)
  ids = []
  for k, (image, label) in enumerate(zip(data.images, data.labels)):
    rel = os.path.join(image_set.PBC_CLASS_NAMES[label], f"cell_{k:02d}.png")
    os.makedirs(root / "data" / os.path.dirname(rel), exist_ok=True)
    Image.fromarray(image).save(root / "data" / rel)
    ids.append(rel)
  kept = sorted(ids)[::6] + sorted(ids)[1::6] + sorted(ids)[2::6] + sorted(ids)[3::6] + \
      sorted(ids)[4::6]
  (root / "keep.txt").write_text("".join(f"{i}\n" for i in sorted(kept)))
  return root, dict(zip(ids, data.images)), sorted(kept)
