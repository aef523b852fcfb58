"""Readers for every supported data format, each validating as it reads.

A source is a path string: an ImageFolder directory, a course `.npz`
(`images`, `labels`), a MedMNIST `.npz` (`train_images`, `val_labels`, ...; add
`:train`, `:val` or `:test` to pick a split), or empty for the embedded
synthetic data. Every reader returns an `ImageSet`: uint8 RGB images at the
configured size, int32 labels and a stable id per image.

`SOURCES` is the registry of these kinds: a `Source` says which paths it reads and how, and
`load_source` reads a path with the first kind that matches it.
"""

import dataclasses
import logging
import os
import zipfile
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from bloodcell_jax.data import synthetic
from bloodcell_jax.data.image_set import PBC_CLASS_NAMES, ImageSet
from bloodcell_jax.errors import UserError
from bloodcell_jax.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MEDMNIST_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Request:
  """What `load_source` was asked for beside the path."""
  image_size: int
  default_split: str = "train"
  class_names: Sequence[str] = PBC_CLASS_NAMES
  folder_classes: Optional[Sequence[str]] = None
  synthetic_size: int = 2000
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Source:
  """A kind of data source.

  matches(path): whether `path` (a ':split' suffix removed) is of this kind.
  read(path, split, request): the ImageSet; `split` is the suffix given, or "".
  describes: what such a path is, for the errors of a path no kind matches ("" for none).
  """
  matches: Callable[[str], bool]
  read: Callable[[str, str, Request], ImageSet]
  describes: str = ""


# The kinds load_source tries, in registration order: the first that matches reads the path.
SOURCES = Registry("data source")


def _read_synthetic(path: str, split: str, request: Request) -> ImageSet:
  del path, split
  return synthetic.generate(request.synthetic_size, request.image_size, seed=request.seed)


def _read_folder(path: str, split: str, request: Request) -> ImageSet:
  if split:
    raise UserError(f"{path}:{split}: a ':{split}' suffix only applies to MedMNIST .npz files")
  return read_image_folder(path, request.image_size, request.folder_classes)


def _read_npz(path: str, split: str, request: Request) -> ImageSet:
  return read_npz(path, request.image_size, split=split or request.default_split,
                  explicit_split=bool(split), class_names=request.class_names)


SOURCES.register("synthetic", Source(lambda path: not path, _read_synthetic))
SOURCES.register("image_folder", Source(os.path.isdir, _read_folder,
                                        "an ImageFolder directory"))
SOURCES.register("npz", Source(lambda path: path.endswith(".npz") and os.path.isfile(path),
                               _read_npz, "an .npz file"))


def load_source(source: str, image_size: int, *, default_split: str = "train",
                class_names: Sequence[str] = PBC_CLASS_NAMES,
                folder_classes: Optional[Sequence[str]] = None,
                synthetic_size: int = 2000, seed: int = 0) -> ImageSet:
  """Reads `source` (see module doc) with the first kind of SOURCES that matches it; empty
  means the synthetic default.

  `class_names` names the label indices of .npz sources; `folder_classes`, when
  given, fixes the class order of an ImageFolder (that of the training data).
  """
  path, split = _split_suffix(source)
  request = Request(image_size, default_split, class_names, folder_classes, synthetic_size,
                    seed)
  for _, kind in SOURCES.items():
    if kind.matches(path):
      return kind.read(path, split, request)
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file or directory (expected {_described()})")
  raise UserError(f"{path}: unsupported data source (expected {_described()})")


def _described() -> str:
  """What a path may be, from the registered kinds: "a, b or c"."""
  *others, last = [kind.describes for _, kind in SOURCES.items() if kind.describes]
  return f"{', '.join(others)} or {last}" if others else last


def _split_suffix(source: str):
  head, sep, tail = source.rpartition(":")
  if sep and tail in MEDMNIST_SPLITS and head.endswith(".npz"):
    return head, tail
  return source, ""


def read_image_folder(root: str, image_size: int,
                      class_names: Optional[Sequence[str]] = None) -> ImageSet:
  """One sub-folder per class, images in its sub-folders included; other files are skipped
  and listed in one warning.

  Class indices follow the sorted folder names, or `class_names` when given
  (an evaluation folder may then lack classes, but not add any).
  """
  class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir()
                      and not e.name.startswith("."))
  if not class_dirs:
    raise UserError(f"{root}: no class sub-folders found (expected ImageFolder "
                    "layout <root>/<class>/<image>)")
  class_names = tuple(class_names) if class_names is not None else tuple(class_dirs)
  unknown = [d for d in class_dirs if d not in class_names]
  if unknown:
    raise UserError(f"{root}: class folder(s) {unknown} are not among the training "
                    f"classes {list(class_names)}")
  files, labels, not_images = [], [], []
  for class_dir in class_dirs:
    label = class_names.index(class_dir)
    names, others = image_files(os.path.join(root, class_dir))
    if not names:
      raise UserError(f"{os.path.join(root, class_dir)}: empty class folder (expected "
                      f"at least one {'/'.join(IMAGE_EXTENSIONS)} image)")
    files += [os.path.join(class_dir, n) for n in names]
    labels += [label] * len(names)
    not_images += [os.path.join(class_dir, n) for n in others]
  nested = sum(os.sep in f[f.index(os.sep) + 1:] for f in files)
  if nested:
    logging.info("%s: %d of %d images are in sub-folders of their class folder (read with "
                 "the class folder's label)", root, nested, len(files))
  if not_images:
    logging.warning("%s: skipped %d file%s that %s not %s images: %s%s", root,
                    len(not_images), "s" if len(not_images) > 1 else "",
                    "are" if len(not_images) > 1 else "is", "/".join(IMAGE_EXTENSIONS),
                    ", ".join(not_images[:5]), " ..." if len(not_images) > 5 else "")
  images = np.empty((len(files), image_size, image_size, 3), np.uint8)
  resized = converted = 0
  sizes = []
  for i, rel in enumerate(files):
    image, was_resized, was_converted, size = read_image_file(os.path.join(root, rel), image_size)
    images[i] = image
    resized += was_resized
    converted += was_converted
    sizes.append(size)
  warn_tiny(root, files, sizes, image_size)
  return ImageSet(images, np.asarray(labels, np.int32), np.asarray(files),
                  class_names, name=os.path.basename(os.path.normpath(root)),
                  num_resized=resized, num_converted=converted)


def image_files(folder: str):
  """(images, other files) under `folder`, sub-folders included, as sorted relative paths;
  hidden files and folders are left out of both."""
  images, others = [], []
  for directory, subdirs, names in os.walk(folder):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    for name in names:
      if not name.startswith("."):
        relative = os.path.relpath(os.path.join(directory, name), folder)
        (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(relative)
  return sorted(images), sorted(others)


class ReadImage(NamedTuple):
  image: np.ndarray  # uint8 RGB at the asked size
  resized: bool
  converted: bool  # from another mode than 8-bit RGB
  size: Tuple[int, int]  # (width, height) in the file


def read_image_file(path: str, image_size: int) -> ReadImage:
  """The image at `image_size` as uint8 RGB; transparent pixels are composited on white, as
  on a slide (and as for .npz sources); 16-bit and floating-point images are scaled to 8 bits,
  not clipped."""
  try:
    with Image.open(path) as im:
      size = im.size
      converted = im.mode != "RGB"
      if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)),
                                   im.convert("RGBA"))
      elif im.mode.startswith(("I", "F")):
        im = _eight_bit_grey(im)
      im = im.convert("RGB")
      resized = im.size != (image_size, image_size)
      if resized:
        im = im.resize((image_size, image_size), Image.BICUBIC)
      return ReadImage(np.asarray(im, np.uint8), resized, converted, size)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise UserError(f"{path}: unreadable image ({e})") from None


def _eight_bit_grey(im: Image.Image) -> Image.Image:
  """A 16- or 32-bit integer or a float grey image on the 8-bit scale (Pillow's own conversion
  clips every value above 255, so a 16-bit image would read as white): 16-bit files by their
  full range, others by their own (floats in [0, 1] as such)."""
  values = np.asarray(im, np.float64)
  if im.mode.startswith("I;16"):
    top = 65535.0
  elif im.mode == "F" and values.size and values.max() <= 1.0:
    top = 1.0
  else:
    top = max(255.0, float(values.max()) if values.size else 255.0)
  return Image.fromarray(np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8), "L")


def warn_tiny(where: str, names, sizes, image_size: int) -> None:
  """A warning naming the images smaller than a quarter of `image_size` on a side: enlarged
  four times or more, they hold little of what the model was trained to see."""
  tiny = [f"{name} ({w}x{h})" for name, (w, h) in zip(names, sizes)
          if min(w, h) < image_size / 4]
  if tiny:
    logging.warning("%s: %d image%s smaller than a quarter of image_size=%d, enlarged 4x or "
                    "more: %s%s", where, len(tiny), "s" if len(tiny) > 1 else "", image_size,
                    ", ".join(tiny[:5]), " ..." if len(tiny) > 5 else "")


def read_npz(path: str, image_size: int, *, split: str = "train",
             explicit_split: bool = False, labelled: bool = True,
             class_names: Sequence[str] = PBC_CLASS_NAMES) -> ImageSet:
  """The course format (`images`, `labels`) or MedMNIST (`<split>_images`, ...).

  `labelled=False` (prediction) reads the images alone; labels are then zeros.
  """
  if os.path.isfile(path) and not zipfile.is_zipfile(path):
    raise UserError(f"{path}: not an .npz file (an .npz is a zip archive of arrays, written by "
                    "numpy.savez)")
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise UserError(f"{path}: unreadable .npz file ({e})") from None
  if "images" in arrays:
    if explicit_split:
      raise UserError(f"{path}: ':{split}' given, but this is a course .npz with "
                      "'images'/'labels' keys and no splits")
    image_key, label_key, name = "images", "labels", os.path.basename(path)
  elif f"{split}_images" in arrays:
    image_key, label_key = f"{split}_images", f"{split}_labels"
    name = f"{os.path.basename(path)}:{split}"
  else:
    raise UserError(f"{path}: expected keys 'images' and 'labels' (course format) or "
                    f"'{split}_images' and '{split}_labels' (MedMNIST); found "
                    f"{sorted(arrays)}")
  images = _validated_images(arrays[image_key], f"{path}[{image_key}]")
  if not labelled:
    labels = np.zeros(len(images), np.int32)
  elif label_key not in arrays:
    raise UserError(f"{path}: key '{label_key}' missing (found {sorted(arrays)})")
  else:
    labels = _validated_labels(arrays[label_key], len(images), len(class_names),
                               f"{path}[{label_key}]")
  images, converted = _to_rgb(images)
  images, resized = _resize_array(images, image_size)
  return ImageSet(images, labels, np.asarray([str(i) for i in range(len(labels))]),
                  tuple(class_names), name=name, num_resized=resized,
                  num_converted=converted)


def _validated_images(images: np.ndarray, where: str) -> np.ndarray:
  if images.dtype != np.uint8:
    raise UserError(f"{where}: dtype {images.dtype}, expected uint8")
  if images.ndim == 3:  # greyscale (N, H, W)
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise UserError(f"{where}: shape {images.shape}, expected (N, H, W, 3) "
                    "(or 1 / 4 channels, or (N, H, W) greyscale)")
  if len(images) == 0:
    raise UserError(f"{where}: no images")
  return images


def _validated_labels(labels: np.ndarray, n: int, num_classes: int, where: str):
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.ndim != 1 or len(labels) != n:
    raise UserError(f"{where}: shape {labels.shape}, expected ({n},) or ({n}, 1)")
  if not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f"{where}: dtype {labels.dtype}, expected integer class indices")
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise UserError(f"{where}: label {labels[bad[0]]} at row {bad[0]} out of range "
                    f"(expected 0..{num_classes - 1}; {bad.size} such rows)")
  return labels.astype(np.int32)


def _to_rgb(images: np.ndarray):
  channels = images.shape[-1]
  if channels == 3:
    return images, 0
  if channels == 1:
    return np.repeat(images, 3, axis=-1), len(images)
  # RGBA: composite on white, as PIL does for display.
  rgb = images[..., :3].astype(np.float32)
  alpha = images[..., 3:].astype(np.float32) / 255.0
  return np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8), len(images)


def _resize_array(images: np.ndarray, size: int):
  if images.shape[1:3] == (size, size):
    return images, 0
  out = np.empty((len(images), size, size, 3), np.uint8)
  for i, image in enumerate(images):
    out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
  return out, len(images)
