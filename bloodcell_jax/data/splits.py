"""Train / validation / test splits, class weights, and the split manifest."""

import dataclasses
from typing import Optional

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from bloodcell_jax.data.image_set import ImageSet
from bloodcell_jax.data.sources import load_source
from bloodcell_jax.errors import UserError


@dataclasses.dataclass
class Splits:
  train: ImageSet
  val: Optional[ImageSet]  # None: config.data.val_fraction=0 and no config.data.val
  test: Optional[ImageSet]
  # With config.data.clean: what cleaning removed (cleaning/cache.py `summary`); else None.
  cleaning: Optional[dict] = None

  @property
  def class_names(self):
    return self.train.class_names


def stratified_split(data: ImageSet, val_fraction: float, seed: int):
  """Seeded split that keeps each class's share in both parts."""
  if not 0.0 < val_fraction < 1.0:
    raise UserError(f"config.data.val_fraction={val_fraction}: expected a value in (0, 1), "
                    "or 0 for no validation set")
  counts = np.bincount(data.labels, minlength=len(data.class_names))
  singles = [data.class_names[c] for c in np.flatnonzero(counts == 1)]
  if singles:
    raise UserError(f"{data.name}: class(es) {singles} have a single example; a "
                    "stratified split needs at least 2 per class")
  num_classes = int((counts > 0).sum())
  num_val = int(np.ceil(val_fraction * len(data)))
  if min(num_val, len(data) - num_val) < num_classes:
    raise UserError(f"{data.name}: config.data.val_fraction={val_fraction} of {len(data)} "
                    f"images leaves {min(num_val, len(data) - num_val)} in one part, fewer "
                    f"than the {num_classes} classes; change the fraction or set config.data.val")
  train_idx, val_idx = train_test_split(
      np.arange(len(data)), test_size=val_fraction, random_state=seed,
      stratify=data.labels)
  return data.subset(np.sort(train_idx)), data.subset(np.sort(val_idx))


def load_splits(data_config, image_size: int, seed: int) -> Splits:
  """Reads the configured sources and splits train into train/validation.

  With `data_config.clean`, the training source is cleaned first (duplicates,
  label conflicts, contamination, copies of the val/test sources; see
  bloodcell_jax/data/cleaning) and only what its keep list holds is split.
  """
  common = dict(class_names=tuple(data_config.class_names),
                synthetic_size=data_config.synthetic_size, seed=seed)
  fixed = data_config.get("folders_use_class_names", False)
  full = load_source(data_config.train, image_size, default_split="train", **common,
                     folder_classes=tuple(data_config.class_names) if fixed else None)
  present = sorted({full.class_names[i] for i in np.unique(full.labels)})
  if len(present) < 2:
    raise UserError(f"{data_config.train or full.name}: images of {len(present)} class "
                    f"({', '.join(present)}); training needs at least 2 classes")
  common["folder_classes"] = full.class_names
  val = (load_source(data_config.val, image_size, default_split="val", **common)
         if data_config.val else None)
  test = (load_source(data_config.test, image_size, default_split="test", **common)
          if data_config.test else None)
  cleaning = None
  if data_config.get("clean", False):
    from bloodcell_jax.data.cleaning import cache  # pylint: disable=g-import-not-at-top
    held_out = {name: s for name, s in (("val", val), ("test", test)) if s is not None}
    full, cleaning = cache.clean_for_training(full, held_out, data_config.get("cleaning"))
  if val is not None or data_config.val_fraction == 0:
    train = full  # a separate validation source, or none (e.g. a few images of a new lab)
  else:
    train, val = stratified_split(full, data_config.val_fraction, seed)
  for other in (val, test):
    if other is not None and tuple(other.class_names) != tuple(train.class_names):
      raise UserError(f"{other.name}: its labels index the classes {list(other.class_names)} "
                      f"(config.data.class_names), but the training data has "
                      f"{list(train.class_names)}; make config.data.class_names match")
  return Splits(train, val, test, cleaning)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """scikit-learn's "balanced" weights, n / (k * count_c); 0 for absent classes."""
  present = np.unique(labels)
  weights = np.zeros(num_classes, np.float32)
  weights[present] = compute_class_weight("balanced", classes=present, y=labels)
  return weights


def manifest(splits: Splits) -> dict:
  """Ids per split (and their labels), so a run's data can be audited or reused."""
  record = {}
  for name in ("train", "val", "test"):
    subset = getattr(splits, name)
    if subset is not None:
      record[name] = {"source": subset.name, "synthetic": subset.synthetic,
                      "ids": subset.ids.tolist(), "labels": subset.labels.tolist()}
  record["class_names"] = list(splits.class_names)
  return record
