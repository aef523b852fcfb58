"""Dataset cleaning: duplicates, near duplicates, conflicts, contamination, leakage, training."""

import collections
import hashlib
import os

import numpy as np
import pytest

from bloodcell_jax.data import sources, splits, synthetic
from bloodcell_jax.data.cleaning import cache, duplicates, keep, neighbours, report, run
from bloodcell_jax.data.cleaning import fingerprints as fp
from bloodcell_jax.data.cleaning import settings as settings_lib
from bloodcell_jax.errors import UserError
from helpers import PBC96, ROOT, cleaning, injection

SETTINGS = settings_lib.CleaningSettings()


def _groups(result, kind):
  return sorted(sorted(str(result.data.ids[i]) for i in f.members) for f in result.of_kind(kind))


# ---------------------------------------------------------------------------------------------
# Duplicates and conflicts


@pytest.fixture(scope="module")
def dirty_folder(tmp_path_factory):
  """An ImageFolder with an exact copy in another format, a conflict and near copies."""
  return cleaning.write_dirty_folder(str(tmp_path_factory.mktemp("dirty") / "data"))


@pytest.fixture(scope="module")
def dirty_result(dirty_folder):
  root, _, _ = dirty_folder
  return run.clean(sources.load_source(root, 96), SETTINGS)


def test_exact_duplicates_are_found_whatever_the_file_bytes(dirty_folder, dirty_result):
  _, ids, extra = dirty_folder
  assert _groups(dirty_result, "exact_duplicate") == sorted([
      sorted([ids[3], extra["exact_png"]]), sorted([ids[5], extra["conflict"]])])


def test_near_duplicates_are_found_through_flips_turns_shifts_and_reencoding(
    dirty_folder, dirty_result):
  _, ids, extra = dirty_folder
  expected = [sorted([ids[k], extra[key]]) for k, key in
              ((7, "flip"), (9, "rot90"), (11, "jpeg70"), (13, "shift"), (15, "nudged"))]
  assert _groups(dirty_result, "near_duplicate") == sorted(expected)
  pairs = {frozenset((p["a"], p["b"])): p for f in dirty_result.of_kind("near_duplicate")
           for p in f.details["pairs"]}
  assert pairs[frozenset((ids[7], extra["flip"]))]["transform"] == "flip"
  assert pairs[frozenset((ids[9], extra["rot90"]))]["transform"] in ("rot90", "rot270")
  shift = pairs[frozenset((ids[13], extra["shift"]))]
  # The shift moves image b onto image a; the copy was moved by (3, -2).
  assert shift["shift"] == ([-3, 2] if shift["b"] == extra["shift"] else [3, -2])
  assert all(p["similarity"] >= SETTINGS.near_min_similarity for p in pairs.values())


def test_a_conflicting_group_is_removed_unless_kept(dirty_folder, dirty_result):
  root, ids, extra = dirty_folder
  conflict, = dirty_result.of_kind("label_conflict")
  assert sorted(str(dirty_result.data.ids[i]) for i in conflict.members) == sorted(
      [ids[5], extra["conflict"]])
  kept = set(dirty_result.data.ids[dirty_result.keep])
  assert ids[5] not in kept and extra["conflict"] not in kept
  first, second = sorted([ids[3], extra["exact_png"]])  # the first in id order stays
  assert first in kept and second not in kept
  lenient = run.clean(sources.load_source(root, 96),
                      settings_lib.CleaningSettings(keep_conflicts=True))
  kept = set(lenient.data.ids[lenient.keep])
  assert ids[5] in kept and extra["conflict"] in kept  # one image per label


def test_leakage_into_the_test_set_is_found_exact_and_near(dirty_folder, tmp_path):
  root, ids, _ = dirty_folder
  data = sources.load_source(root, 96)
  position = {i: k for k, i in enumerate(data.ids)}
  test_images = [data.images[position[ids[20]]],
                 injection.jpeg(np.ascontiguousarray(np.rot90(data.images[position[ids[21]]],
                                                              2)), 75),
                 synthetic.generate(1, 96, seed=99).images[0]]
  test = cleaning.as_image_set(np.stack(test_images), [0, 0, 0], name="held-out")
  result = run.clean(data, SETTINGS, {"test": test})
  leaks = {f.details["held_out_ids"][0]: [str(data.ids[i]) for i in f.members]
           for f in result.of_kind("leakage")}
  assert leaks == {"0": [ids[20]], "1": [ids[21]]}
  kept = set(result.data.ids[result.keep])
  assert ids[20] not in kept and ids[21] not in kept


# ---------------------------------------------------------------------------------------------
# The real images


@pytest.fixture(scope="module")
def pbc96_images():
  if not os.path.isdir(PBC96):
    pytest.skip(f"real data not present at {PBC96}")
  return sources.load_source(PBC96, 96)


def _byte_identical_groups(root):
  by_digest = collections.defaultdict(list)
  for d, _, files in os.walk(root):
    for f in files:
      if f.endswith(".jpg"):
        with open(os.path.join(d, f), "rb") as handle:
          by_digest[hashlib.md5(handle.read()).hexdigest()].append(
              os.path.relpath(os.path.join(d, f), root))
  return sorted(sorted(g) for g in by_digest.values() if len(g) > 1)


@pytest.mark.real_data
def test_pbc96_every_byte_identical_group_and_the_conflict_are_found(pbc96_images):
  """The exact-duplicate stage on the real images (the whole cleaning of them, with its
  share of contaminated images and its time, is benchmarks/clean.py's)."""
  data = pbc96_images
  groups = duplicates.exact_groups(fp.pixel_digests(data.images))
  expected = _byte_identical_groups(PBC96)
  assert len(expected) == 16
  assert sorted(sorted(str(data.ids[i]) for i in g) for g in groups) == expected
  conflicts = [sorted(str(data.ids[i]) for i in g) for g in groups
               if len(set(data.labels[g])) > 1]
  assert conflicts == [["eosinophil/EO_225902.jpg", "neutrophil/BNE_191112.jpg"]]


# ---------------------------------------------------------------------------------------------
# Training integration and errors


def test_a_reviewed_keep_file_is_applied_and_checked(dirty_folder, tmp_path):
  root, ids, _ = dirty_folder
  keep = tmp_path / "keep.txt"
  keep.write_text("".join(f"{i}\n" for i in ids[:40]))
  config = cleaning.data_config(root, tmp_path / "cache", keep_file=str(keep))
  cleaned = splits.load_splits(config, 96, seed=0)
  assert sorted(set(cleaned.train.ids) | set(cleaned.val.ids)) == sorted(ids[:40])
  assert cleaned.cleaning["keep_file"] == str(keep)
  keep.write_text("basophil/not_there.jpg\n")
  with pytest.raises(UserError, match="not_there.jpg' is not in"):
    splits.load_splits(config, 96, seed=0)


def test_a_missing_or_unreadable_keep_file_is_one_line(dirty_folder, tmp_path):
  root, _, _ = dirty_folder
  missing = tmp_path / "missing.txt"
  config = cleaning.data_config(root, tmp_path / "cache", keep_file=str(missing))
  with pytest.raises(UserError, match=rf"^config.data.cleaning.keep_file={missing}: no such "
                     "file \\(expected a keep.txt written by python -m bloodcell_jax.data.clean"):
    splits.load_splits(config, 96, seed=0)
  with pytest.raises(UserError, match=rf"^keep_file={tmp_path}: unreadable keep file"):
    keep.read_ids(tmp_path, "keep_file")


def test_config_keys_match_the_settings_and_are_validated():
  import runpy  # pylint: disable=g-import-not-at-top
  config = runpy.run_path(os.path.join(ROOT, "configs", "default.py"))["get_config"]()
  assert config.data.clean is False
  chosen = settings_lib.from_mapping(config.data.cleaning)
  assert chosen == settings_lib.CleaningSettings()
  with pytest.raises(UserError, match=r"config.data.cleaning.max_texture_z=-1.0"):
    settings_lib.from_mapping({"max_texture_z": -1})
  with pytest.raises(UserError, match=r"unknown key\(s\) \['near_radios'\]"):
    settings_lib.from_mapping({"near_radios": 1})


def test_npz_sources_report_row_indices(tmp_path):
  images, labels, _ = cleaning.cells(30, seed=4)
  images = np.concatenate([images, images[2:3]])
  labels = np.concatenate([labels, labels[2:3]])
  path = tmp_path / "course.npz"
  np.savez(path, images=images, labels=labels)
  result = run.clean(sources.load_source(str(path), 96), SETTINGS)
  assert _groups(result, "exact_duplicate") == [["2", "30"]]
  written = report.write(result, str(tmp_path / "out"))
  assert written["findings"][0]["ids"] == ["2", "30"] or any(
      f["ids"] == ["2", "30"] for f in written["findings"])
  assert "30" not in keep.read_ids(tmp_path / "out" / "keep.txt")


def test_fingerprint_changes_with_pixels_labels_and_settings():
  images, labels, _ = cleaning.cells(6, seed=5)
  data = cleaning.as_image_set(images, labels)
  key = cache.fingerprint(data, {}, SETTINGS)
  assert key == cache.fingerprint(cleaning.as_image_set(images.copy(), labels), {}, SETTINGS)
  changed = images.copy()
  changed[0, 0, 0, 0] ^= 1
  assert key != cache.fingerprint(cleaning.as_image_set(changed, labels), {}, SETTINGS)
  assert key != cache.fingerprint(cleaning.as_image_set(images, (labels + 1) % 8), {}, SETTINGS)
  assert key != cache.fingerprint(data, {}, settings_lib.CleaningSettings(min_std=5.0))


def test_hash_search_finds_copies_in_every_orientation_and_few_others():
  rng = np.random.default_rng(0)
  basis, _ = np.linalg.qr(rng.normal(size=(64, 64)))
  thumbs = (rng.normal(size=(5000, 64)) * np.arange(1, 65) ** -0.75) @ basis
  thumbs = fp.standardise(thumbs.astype(np.float32))
  originals = np.arange(0, 400, 2)
  for k, i in enumerate(originals):  # image i+1 is image i turned by g, plus a little noise
    thumbs[i + 1] = fp.oriented(thumbs[i:i + 1], k % 8)[0] + rng.normal(0, 0.05, 64)
  thumbs = fp.standardise(thumbs)
  index = neighbours.ThumbnailIndex(thumbs, tables=20)
  found = index.query(thumbs, radius=2.25, same_set=True)
  pairs = {(int(a), int(b)): int(g) for a, b, g in zip(found.a, found.b, found.g)}
  assert all((i, i + 1) in pairs for i in originals)
  # g turns b (the copy) back onto a: the inverse of the turn that made it.
  assert all(pairs[(i, i + 1)] == fp.INVERSE[k % 8] for k, i in enumerate(originals))
  assert len(pairs) < 1.2 * len(originals)
  assert all(fp.dihedral(fp.dihedral(np.arange(6).reshape(2, 3), g), fp.INVERSE[g]).tolist()
             == [[0, 1, 2], [3, 4, 5]] for g in range(8))


def test_line_responses_see_strokes_and_not_edges_and_write_over_inks_what_it_covers():
  from bloodcell_jax.data.cleaning import annotations  # pylint: disable=g-import-not-at-top
  image = np.full((1, 96, 96, 3), 220, np.uint8)
  image[0, :, 60:] = 90  # a cell's edge: a step, no stroke
  image[0, 20:40, 20:22] = 40  # a vertical stroke 2 px wide
  dark, _ = annotations._lines(np.ascontiguousarray(np.moveaxis(image, -1, 0)), 2)  # pylint: disable=protected-access
  assert dark[0, 0, 30, 20] == 180  # across the stroke (horizontal neighbours)
  assert dark[1, 0, 30, 20] == 0  # along it
  assert dark.max(axis=0)[0, :, 55:66].max() == 0  # the step edge never responds
  written, cover = annotations.write_over(image[0], np.random.default_rng(0))
  inked = cover > 0.5
  assert inked.sum() > 50
  assert np.abs(written.astype(int) - image[0])[inked].max(axis=-1).min() > 0
  assert np.array_equal(written[cover == 0], image[0][cover == 0])
