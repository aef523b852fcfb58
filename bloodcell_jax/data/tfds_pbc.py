"""A tensorflow-datasets builder for blood-cell images, with a cleaning manifest applied.

The prepared dataset is a reusable, versioned artefact: train / validation /
test splits of 96x96 RGB images (lossless PNG), labels and source ids, built
from an ImageFolder or an .npz and restricted to the ids of a keep.txt written
by `python -m bloodcell_jax.data.clean`. The config (source, keep file, split
fractions, seed) is recorded in the dataset's metadata, with a digest of the
keep file, so that a prepared copy says what it was made from.

Python:
  import tensorflow_datasets as tfds
  from bloodcell_jax.data import tfds_pbc
  config = tfds_pbc.PbcCellsConfig(name="pbc96_clean", source="../shared/data/pbc96",
                                   keep_file="/tmp/clean_pbc96/keep.txt")
  tfds.builder("pbc_cells", config=config, data_dir=DIR).download_and_prepare()
  train = tfds.load("pbc_cells/pbc96_clean", split="train", data_dir=DIR)

Command line (same arguments):
  python -m bloodcell_jax.data.build_tfds --source=../shared/data/pbc96 \\
      --keep_file=/tmp/clean_pbc96/keep.txt --name=pbc96_clean --data_dir=DIR
  tfds build bloodcell_jax/data/tfds_pbc.py --data_dir=DIR \\
      --config='{"name": "pbc96_clean", "source": "...", "keep_file": "..."}'
(`tfds build` of tensorflow-datasets 4.9.10 needs apache-beam installed.)
A source may also come through --manual_dir when the config names none.
"""

import dataclasses
import hashlib
import os
from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds
from sklearn.model_selection import train_test_split

from bloodcell_jax.data import image_set, sources
from bloodcell_jax.data.cleaning import keep
from bloodcell_jax.errors import UserError

_CITATION = """@article{acevedo2020dataset,
  title={A dataset of microscopic peripheral blood cell images for development of automatic
         recognition systems},
  author={Acevedo, Andrea and Merino, Anna and Alf{\\'e}rez, Santiago and Molina, {\\'A}ngel and
          Bold{\\'u}, Laura and Rodellar, Jos{\\'e}},
  journal={Data in Brief}, volume={30}, pages={105474}, year={2020}}"""


@dataclasses.dataclass(eq=False)
class PbcCellsConfig(tfds.core.BuilderConfig):
  """Where the images come from, which to keep, and how to split them.

  Attributes:
    source: ImageFolder or .npz (empty: the builder's manual_dir).
    keep_file: keep.txt of a cleaning run; empty keeps every image.
    test_source: a separate test set; empty splits `test_fraction` off the source.
    val_fraction, test_fraction: shares of the kept images (stratified by label).
    seed: of the split.
    image_size: images are resized to this square size.
    class_names: label order (an ImageFolder's folders must be among them).
  """
  source: str = ""
  keep_file: str = ""
  test_source: str = ""
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  seed: int = 0
  image_size: int = 96
  class_names: Tuple[str, ...] = image_set.PBC_CLASS_NAMES


class PbcCells(tfds.core.GeneratorBasedBuilder):
  """Peripheral blood cell images (8 classes), cleaned and split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release: train/validation/test splits of an ImageFolder or .npz, "
               "restricted to a cleaning keep.txt; lossless PNG images, labels and source ids.",
  }
  BUILDER_CONFIGS = [PbcCellsConfig(name="default", description="The source as given, no "
                                    "manifest: pass your own config for a cleaned build.")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Give the images as the config's `source` (an ImageFolder of the PBC dataset, "
      "doi:10.17632/snkd93bnjr.1, or an .npz with 'images' and 'labels'), or put the ImageFolder "
      "in --manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(self.builder_config.class_names)),
            "id": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://doi.org/10.17632/snkd93bnjr.1",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    source = config.source or _manual_dir(dl_manager)
    data = _read(source, config)
    kept = _apply_keep_file(data, config.keep_file)
    if config.test_source:
      test = _read(config.test_source, config, default_split="test")
      train, val = _split(kept, config.val_fraction, config.seed)
    else:
      rest, test = _split(kept, config.test_fraction, config.seed)
      train, val = _split(rest, config.val_fraction / (1.0 - config.test_fraction),
                          config.seed)
    self.info.metadata.update({
        "source": os.path.abspath(source), "keep_file": config.keep_file,
        "keep_file_blake2b": _file_digest(config.keep_file) if config.keep_file else "",
        "num_source_images": len(data), "num_removed_by_manifest": len(data) - len(kept),
        "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
        "seed": config.seed, "test_source": config.test_source})
    return {"train": self._generate_examples(train),
            "validation": self._generate_examples(val),
            "test": self._generate_examples(test)}

  def _generate_examples(self, data):
    for image, label, image_id in zip(data.images, data.labels, data.ids):
      yield str(image_id), {"image": image, "label": int(label), "id": str(image_id)}


def _manual_dir(dl_manager) -> str:
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:
    raise UserError("pbc_cells: no source (set the config's `source` or pass --manual_dir)"
                    ) from None


def _read(path: str, config, default_split: str = "train"):
  return sources.load_source(path, config.image_size, default_split=default_split,
                             class_names=config.class_names, folder_classes=config.class_names)


def _apply_keep_file(data, keep_file: str):
  if not keep_file:
    return data
  return data.subset(np.flatnonzero(keep.kept_mask(data, keep_file, "keep_file")))


def _split(data, fraction: float, seed: int):
  """Stratified by label when each part can hold every class, plain otherwise."""
  if not 0.0 < fraction < 1.0:
    raise UserError(f"pbc_cells: a split fraction of {fraction} (expected a value in (0, 1))")
  counts = np.bincount(data.labels)
  classes = int((counts > 0).sum())
  second = int(np.ceil(fraction * len(data)))
  can_stratify = counts[counts > 0].min() >= 2 and min(second, len(data) - second) >= classes
  stratify = data.labels if can_stratify else None
  first, second = train_test_split(np.arange(len(data)), test_size=fraction,
                                   random_state=seed, stratify=stratify)
  return data.subset(np.sort(first)), data.subset(np.sort(second))


def _file_digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def build(data_dir: str, name: str, source: str, keep_file: str = "", test_source: str = "",
          val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
          image_size: int = 96) -> "tfds.core.DatasetBuilder":
  """Prepares `pbc_cells/<name>` in data_dir (a no-op when it is already there)."""
  config = PbcCellsConfig(name=name, source=source, keep_file=keep_file,
                          test_source=test_source, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, image_size=image_size,
                          description=f"{source} restricted to {keep_file or 'all images'}")
  builder = tfds.builder("pbc_cells", config=config, data_dir=data_dir)
  builder.download_and_prepare()
  return builder
