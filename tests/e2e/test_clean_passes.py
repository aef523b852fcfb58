"""Whole cleaning passes: contamination and near copies injected into 2000 cells are found
(recall and precision per kind), and training data is cleaned before the split, through a
cache."""

import collections
import os

import numpy as np
import pytest

from bloodcell_jax.data import splits
from bloodcell_jax.data.cleaning import run
from bloodcell_jax.data.cleaning import settings as settings_lib
from helpers import cleaning, injection

pytestmark = pytest.mark.e2e

SETTINGS = settings_lib.CleaningSettings()


@pytest.fixture(scope="module")
def dirty_folder(tmp_path_factory):
  """An ImageFolder with an exact copy in another format, a conflict and near copies."""
  return cleaning.write_dirty_folder(str(tmp_path_factory.mktemp("dirty") / "data"))


# ---------------------------------------------------------------------------------------------
# Injected contamination and near duplicates: recall and precision per kind


def _precision_recall(flagged, truth_kind, kind):
  """Recall of `kind`; precision counting every false alarm against `kind`."""
  true_positive = int((flagged & (truth_kind == kind)).sum())
  false_alarm = int((flagged & (truth_kind == "clean")).sum())
  total = int((truth_kind == kind).sum())
  return true_positive / total, true_positive / max(true_positive + false_alarm, 1)


def test_injected_contamination_and_near_duplicates_are_found():
  images, labels, origin = cleaning.cells(2000, seed=7)
  rng = np.random.default_rng(3)

  per_kind = 30
  contaminants, truth = [], []
  for kind in injection.CONTAMINANT_KINDS:
    for _ in range(per_kind):
      contaminants.append(injection.contaminant(kind, rng, images[rng.integers(len(images))]))
      truth.append(kind)
  copies, sources_of, copy_kinds = [], [], []
  for kind in injection.COPY_KINDS:
    for source in rng.choice(len(images), 20, replace=False):
      copies.append(injection.near_copy(images[source], kind, rng))
      sources_of.append(int(source))
      copy_kinds.append(kind)
  everything = np.concatenate([images, np.stack(contaminants), np.stack(copies)])
  all_labels = np.concatenate([labels, np.zeros(len(contaminants), np.int32),
                               labels[np.asarray(sources_of)]])
  result = run.clean(cleaning.as_image_set(everything, all_labels), SETTINGS)

  n, c = len(images), len(contaminants)
  truth_kind = np.asarray(["clean"] * n + truth + ["copy"] * len(copies))
  flagged = result.contamination_scores.flagged
  lines = [f"{origin}: {n} images, {c} contaminants, {len(copies)} near copies"]
  false_alarms = int((flagged & (truth_kind == "clean")).sum())
  precision = c_found / (c_found + false_alarms) if (c_found := int(flagged[n:n + c].sum())) else 0
  lines.append(f"contaminated: {c_found} of {c} found, {false_alarms} false alarms "
               f"(precision {precision:.3f})")
  for kind in injection.CONTAMINANT_KINDS:
    recall, _ = _precision_recall(flagged, truth_kind, kind)
    lines.append(f"contaminated/{kind}: recall {recall:.3f}")
  for kind in injection.CONTAMINANT_KINDS:
    recall, _ = _precision_recall(flagged, truth_kind, kind)
    assert recall >= 0.95, "\n".join(lines)
  assert precision >= 0.99, "\n".join(lines)

  linked = set()
  for kind in ("exact_duplicate", "near_duplicate"):
    for f in result.of_kind(kind):
      linked |= {(int(a), int(b)) for a in f.members for b in f.members if a < b}
  native_pairs = {(a, b) for a, b in linked if b < n}  # duplicates the sample came with
  injected = {(s, n + c + k) for k, s in enumerate(sources_of)}
  # A copy of an image that has a native duplicate also links to that duplicate: not false.
  twins = collections.defaultdict(set)
  for a, b in native_pairs:
    twins[a].add(b)
    twins[b].add(a)
  expected = injected | {(min(t, k), max(t, k)) for s, k in injected for t in twins[s]}
  expected |= {(min(k1, k2), max(k1, k2)) for s1, k1 in injected for s2, k2 in injected
               if s1 == s2 and k1 != k2}
  # A contaminant drawn over a cell (words, a pasted patch) may link to that cell, rightly.
  over_cells = {(a, b) for a, b in linked if n <= a < n + c or n <= b < n + c}
  false_links = linked - expected - native_pairs - over_cells
  for kind in injection.COPY_KINDS:
    mine = {(s, n + c + k) for k, (s, ck) in enumerate(zip(sources_of, copy_kinds)) if ck == kind}
    recall = len(mine & linked) / len(mine)
    precision = len(mine & linked) / max(len(mine & linked) + len(false_links), 1)
    lines.append(f"near_duplicate/{kind}: recall {recall:.3f} precision {precision:.3f}")
    assert recall >= 0.95 and precision >= 0.95, "\n".join(lines)
  print("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Training integration


def test_training_cleans_before_the_split_and_reuses_the_cache(dirty_folder, tmp_path):
  root, ids, extra = dirty_folder
  config = cleaning.data_config(root, tmp_path / "cache")
  first = splits.load_splits(config, 96, seed=0)
  summary = first.cleaning
  assert summary["reused_cache"] is False
  assert summary["removed"]["label_conflict"] == 2
  assert summary["findings"]["exact_duplicate"] == 2
  used = set(first.train.ids) | set(first.val.ids)
  removed = {ids[5], extra["conflict"], max(ids[7], extra["flip"]), max(ids[3], extra["exact_png"])}
  assert not used & removed
  assert set(summary["removed_ids"]["label_conflict"]) == {ids[5], extra["conflict"]}
  assert len(used) == summary["num_kept"]
  assert os.path.isfile(os.path.join(summary["report_dir"], "keep.txt"))
  again = splits.load_splits(config, 96, seed=0)
  assert again.cleaning["reused_cache"] is True
  assert again.cleaning["report_dir"] == summary["report_dir"]
  assert list(again.train.ids) == list(first.train.ids)
  other = splits.load_splits(cleaning.data_config(root, tmp_path / "cache", keep_conflicts=True),
                             96, 0)
  assert other.cleaning["report_dir"] != summary["report_dir"]  # other settings, other key
