import os

import numpy as np
import pytest
from PIL import Image

from bloodcell_jax.data import sources, synthetic
from bloodcell_jax.errors import UserError
from conftest import write_image_folder


def test_image_folder_reads_classes_in_sorted_order_and_ignores_loose_files(tmp_path):
  root = write_image_folder(str(tmp_path / "data"), images_per_class=3, size=24,
                            classes=("zeta", "alpha"))
  data = sources.read_image_folder(root, image_size=24)
  assert data.class_names == ("alpha", "zeta")
  assert len(data) == 6
  assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
  assert data.ids[0] == os.path.join("alpha", "alpha_0.png")
  original = np.asarray(Image.open(os.path.join(root, "alpha", "alpha_0.png")))
  np.testing.assert_array_equal(data.images[0], original)
  assert data.num_resized == 0


def test_image_folder_converts_and_resizes_and_counts(tmp_path):
  root = tmp_path / "data"
  (root / "a").mkdir(parents=True)
  Image.fromarray(np.full((40, 40), 200, np.uint8), "L").save(root / "a" / "grey.png")
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 255, 255
  Image.fromarray(rgba, "RGBA").save(root / "a" / "red.png")
  data = sources.read_image_folder(str(root), image_size=32)
  assert data.images.shape == (2, 32, 32, 3)
  assert data.num_resized == 1 and data.num_converted == 2
  np.testing.assert_array_equal(data.images[0], 200)
  np.testing.assert_array_equal(data.images[1][..., 0], 255)


def test_evaluation_folder_follows_the_training_class_order(tmp_path):
  root = write_image_folder(str(tmp_path / "test"), images_per_class=1, classes=("c", "a"))
  data = sources.read_image_folder(root, 24, class_names=("a", "b", "c"))
  assert data.class_names == ("a", "b", "c")
  assert data.labels.tolist() == [0, 2]
  with pytest.raises(UserError, match=r"class folder\(s\) \['c'\] are not among"):
    sources.read_image_folder(root, 24, class_names=("a", "b"))


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such file or directory"),
    ("empty_class", "empty class folder"),
    ("unreadable", "unreadable image"),
    ("no_classes", "no class sub-folders"),
])
def test_image_folder_errors_name_the_path(tmp_path, problem, message):
  root = tmp_path / "data"
  write_image_folder(str(root), images_per_class=2)
  if problem == "missing":
    root = tmp_path / "nope"
  elif problem == "empty_class":
    (root / "d").mkdir()
  elif problem == "unreadable":
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
  elif problem == "no_classes":
    root = tmp_path / "flat"
    root.mkdir()
  with pytest.raises(UserError, match=message) as info:
    sources.load_source(str(root), 24)
  assert "\n" not in str(info.value)


def test_course_npz_accepts_column_labels_and_validates(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
  path = str(tmp_path / "course.npz")
  np.savez(path, images=images, labels=np.arange(5).reshape(5, 1))
  data = sources.load_source(path, 96)
  assert data.labels.tolist() == [0, 1, 2, 3, 4]
  assert data.ids.tolist() == ["0", "1", "2", "3", "4"]
  assert data.class_names == sources.PBC_CLASS_NAMES

  np.savez(path, images=images.astype(np.float32), labels=np.arange(5))
  with pytest.raises(UserError, match=r"course.npz\[images\]: dtype float32, expected uint8"):
    sources.load_source(path, 96)
  np.savez(path, images=images, labels=np.array([0, 1, 2, 3, 8]))
  with pytest.raises(UserError, match=r"label 8 at row 4 out of range \(expected 0..7"):
    sources.load_source(path, 96)
  np.savez(path, images=images[:, :, :, 0:2], labels=np.arange(5))
  with pytest.raises(UserError, match=r"shape \(5, 96, 96, 2\), expected"):
    sources.load_source(path, 96)
  np.savez(path, pictures=images)
  with pytest.raises(UserError, match="expected keys 'images' and 'labels'"):
    sources.load_source(path, 96)


def test_medmnist_npz_splits_and_resizing(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (("train", 6), ("val", 2), ("test", 3)):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    arrays[f"{split}_labels"] = rng.integers(0, 8, (n, 1))
  path = str(tmp_path / "bloodmnist_64.npz")
  np.savez(path, **arrays)
  train = sources.load_source(path, 96)
  test = sources.load_source(path, 96, default_split="test")
  val = sources.load_source(path + ":val", 96)
  assert (len(train), len(test), len(val)) == (6, 3, 2)
  assert train.images.shape == (6, 96, 96, 3) and train.num_resized == 6
  assert val.name.endswith(":val")
  np.testing.assert_array_equal(test.labels, arrays["test_labels"][:, 0])


def test_greyscale_npz_becomes_rgb(tmp_path):
  path = str(tmp_path / "grey.npz")
  np.savez(path, images=np.full((2, 8, 8), 7, np.uint8), labels=np.array([0, 1]))
  data = sources.load_source(path, 8)
  assert data.images.shape == (2, 8, 8, 3) and data.num_converted == 2
  assert (data.images == 7).all()


def test_synthetic_default_is_deterministic_balanced_and_marked():
  a = sources.load_source("", 32, synthetic_size=40, seed=3)
  b = synthetic.generate(40, 32, seed=3)
  c = synthetic.generate(40, 32, seed=4)
  np.testing.assert_array_equal(a.images, b.images)
  assert not np.array_equal(a.images, c.images)
  assert a.synthetic and "synthetic" in a.name
  assert np.bincount(a.labels).tolist() == [5] * 8


def test_real_pbc96_folder_matches_its_readme(pbc96):
  data = sources.read_image_folder(pbc96, 96)
  assert len(data) == 13598
  assert data.class_names == sources.PBC_CLASS_NAMES
  counts = np.bincount(data.labels).tolist()
  assert counts == [961, 2481, 1230, 2304, 971, 1125, 2651, 1875]
  assert data.num_resized == 0
