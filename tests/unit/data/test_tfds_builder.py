"""The tensorflow-datasets builder: a cleaned ImageFolder becomes versioned train/val/test
splits."""

import numpy as np
import pytest

from bloodcell_jax.data import image_set
from bloodcell_jax.errors import UserError
from helpers import images

tfds = pytest.importorskip("tensorflow_datasets")
from bloodcell_jax.data import tfds_pbc  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def folder_and_keep(tmp_path_factory):
  """A 48-image ImageFolder (PNG, 6 per class) and a keep.txt that drops 8 of them."""
  return images.write_folder_and_keep_file(tmp_path_factory.mktemp("tfds"))


def test_build_and_load_with_the_manifest_applied(folder_and_keep):
  root, pixels, kept = folder_and_keep
  builder = tfds_pbc.build(str(root / "tfds"), "tiny", str(root / "data"),
                           keep_file=str(root / "keep.txt"), val_fraction=0.25,
                           test_fraction=0.25)
  assert builder.info.version == "1.0.0"
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert sizes == {"train": 20, "validation": 10, "test": 10}
  assert builder.info.metadata["num_removed_by_manifest"] == 8
  assert builder.info.metadata["keep_file_blake2b"]
  seen = []
  for split in ("train", "validation", "test"):
    ds = tfds.load("pbc_cells/tiny", split=split, data_dir=str(root / "tfds"))
    for example in tfds.as_numpy(ds):
      image_id = example["id"].decode()
      np.testing.assert_array_equal(example["image"], pixels[image_id])  # lossless
      assert image_set.PBC_CLASS_NAMES[example["label"]] == image_id.split("/")[0]
      seen.append(image_id)
  assert sorted(seen) == kept  # every kept image once, nothing else


def test_a_keep_file_for_other_data_is_refused(folder_and_keep, tmp_path):
  root, _, _ = folder_and_keep
  wrong = tmp_path / "keep.txt"
  wrong.write_text("basophil/elsewhere.png\n")
  with pytest.raises(UserError, match="elsewhere.png' is not in"):
    tfds_pbc.build(str(tmp_path / "tfds"), "wrong", str(root / "data"), keep_file=str(wrong))
