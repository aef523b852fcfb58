import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bloodcell_jax import registry
from bloodcell_jax.data import image_set, sources, splits, synthetic
from bloodcell_jax.errors import UserError
from configs import default as default_config
from helpers.images import write_image_folder


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


def test_images_in_sub_folders_are_read_and_other_files_listed(tmp_path, caplog):
  root = write_image_folder(str(tmp_path / "data"), images_per_class=2, classes=("a", "b"))
  write_image_folder(str(tmp_path / "data" / "a" / "day2"), images_per_class=3, classes=("x",))
  (tmp_path / "data" / "b" / "notes.txt").write_text("stain batch 7")
  with caplog.at_level("INFO"):
    data = sources.read_image_folder(root, 24)
  assert len(data) == 7 and data.labels.tolist() == [0] * 5 + [1] * 2
  assert os.path.join("a", "day2", "x", "x_0.png") in data.ids.tolist()
  assert "3 of 7 images are in sub-folders" in caplog.text
  assert "skipped 2 files that are not" in caplog.text  # the sub-folder's README too
  assert os.path.join("b", "notes.txt") in caplog.text


def test_transparent_pixels_are_white_from_folders_and_npz_alike(tmp_path):
  rgba = np.zeros((1, 8, 8, 4), np.uint8)
  rgba[..., :3] = 40  # dark colour under full transparency
  (tmp_path / "a").mkdir()
  Image.fromarray(rgba[0], "RGBA").save(tmp_path / "a" / "clear.png")
  np.savez(tmp_path / "clear.npz", images=rgba, labels=np.zeros(1, np.int64))
  from_folder = sources.read_image_folder(str(tmp_path), 8).images
  from_npz = sources.read_npz(str(tmp_path / "clear.npz"), 8).images
  np.testing.assert_array_equal(from_folder, 255)
  np.testing.assert_array_equal(from_npz, 255)


def test_decompression_bomb_is_an_unreadable_image_named_by_path(tmp_path):
  path = tmp_path / "bomb.png"
  header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data +
                              struct.pack(">I", zlib.crc32(kind + data)))
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
  with pytest.raises(UserError, match=rf"^{path}: unreadable image \(Image size \(900000000 "
                     r"pixels\) exceeds limit"):
    sources.read_image_file(str(path), 24)


def test_training_data_of_one_class_is_refused(tmp_path):
  root = write_image_folder(str(tmp_path / "data"), images_per_class=4, classes=("only",))
  data_config = default_config.get_config().data
  data_config.train = root
  with pytest.raises(UserError, match=rf"^{root}: images of 1 class \(only\); training needs "
                     "at least 2 classes$"):
    splits.load_splits(data_config, 24, seed=0)


def test_folders_can_hold_some_of_the_configured_classes_in_their_order(tmp_path):
  root = write_image_folder(str(tmp_path / "lab"), images_per_class=3, classes=("b", "d"))
  data_config = default_config.get_config().data
  data_config.update(train=root, val_fraction=0.0, class_names=("a", "b", "c", "d"))
  assert splits.load_splits(data_config, 24, seed=0).class_names == ("b", "d")
  data_config.folders_use_class_names = True
  data = splits.load_splits(data_config, 24, seed=0)
  assert data.class_names == ("a", "b", "c", "d")
  assert sorted(set(data.train.labels.tolist())) == [1, 3]
  data_config.class_names = ("a", "b", "c")
  with pytest.raises(UserError, match=r"class folder\(s\) \['d'\] are not among the training"):
    splits.load_splits(data_config, 24, seed=0)


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
  assert data.class_names == image_set.PBC_CLASS_NAMES

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


@pytest.mark.real_data
def test_real_pbc96_folder_matches_its_readme(pbc96):
  data = sources.read_image_folder(pbc96, 96)
  assert len(data) == 13598
  assert data.class_names == image_set.PBC_CLASS_NAMES
  counts = np.bincount(data.labels).tolist()
  assert counts == [961, 2481, 1230, 2304, 971, 1125, 2651, 1875]
  assert data.num_resized == 0


def test_a_registered_source_kind_is_read_and_named_in_errors(tmp_path, monkeypatch):
  kinds = registry.Registry("data source")
  for name, kind in sources.SOURCES.items():
    kinds.register(name, kind)
  listed = synthetic.generate(4, 16, seed=0)
  kinds.register("list", sources.Source(lambda path: path.endswith(".list"),
                                        lambda path, split, request: listed, "a .list file"))
  monkeypatch.setattr(sources, "SOURCES", kinds)
  assert sources.load_source(str(tmp_path / "cells.list"), 16) is listed
  (tmp_path / "cells.txt").write_text("")
  with pytest.raises(UserError, match=r"cells.txt: unsupported data source \(expected an "
                     r"ImageFolder directory, an .npz file or a .list file\)$"):
    sources.load_source(str(tmp_path / "cells.txt"), 16)


def test_sixteen_bit_images_are_scaled_not_clipped_to_white(tmp_path):
  grey = np.linspace(0, 255, 24 * 24).reshape(24, 24).round().astype(np.uint8)
  Image.fromarray(grey).save(tmp_path / "grey8.png")
  Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
  eight, sixteen = (sources.read_image_file(str(tmp_path / f"grey{b}.png"), 24)
                    for b in (8, 16))
  assert Image.open(tmp_path / "grey16.png").mode == "I;16"
  np.testing.assert_array_equal(sixteen.image, eight.image)
  assert sixteen.converted and sixteen.image.min() == 0


def test_tiny_images_are_named_in_a_warning(tmp_path, caplog):
  root = write_image_folder(str(tmp_path / "data"), images_per_class=2, size=24,
                            classes=("a", "b"))
  Image.new("RGB", (5, 7), (200, 100, 150)).save(os.path.join(root, "a", "speck.png"))
  with caplog.at_level("WARNING"):
    data = sources.read_image_folder(root, image_size=24)
  assert len(data) == 5  # read, and said
  assert "1 image smaller than a quarter of image_size=24, enlarged 4x or more: " \
         f"{os.path.join('a', 'speck.png')} (5x7)" in caplog.text


def test_a_file_that_is_not_an_npz_archive_says_so(tmp_path):
  path = tmp_path / "cells.npz"
  path.write_text("id,label\n")
  with pytest.raises(UserError, match=rf"^{path}: not an .npz file \(an .npz is a zip archive"):
    sources.read_npz(str(path), 24)
