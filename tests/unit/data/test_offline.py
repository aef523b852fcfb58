"""Offline augmentation: copies made once, cached by fingerprint, deterministic, labelled."""

import os

import numpy as np
import pytest

from bloodcell_jax.data import offline, synthetic
from bloodcell_jax.errors import UserError

SPEC = "flip|randaugment(num_ops=2, magnitude=0.5)|random_brightness(0.2)"


@pytest.fixture(scope="module")
def cells():
  return synthetic.generate(24, 32, seed=2)


def test_copies_extend_the_set_with_labelled_augmented_images(cells, tmp_path):
  extended, summary = offline.with_copies(cells, 2, SPEC, seed=0, cache_dir=str(tmp_path))
  n = len(cells)
  assert len(extended) == 3 * n and summary["num_total"] == 3 * n
  np.testing.assert_array_equal(extended.images[:n], cells.images)
  np.testing.assert_array_equal(extended.labels, np.tile(cells.labels, 3))
  assert extended.ids[n] == f"{cells.ids[0]}#aug1" and extended.ids[2 * n] == f"{cells.ids[0]}#aug2"
  copies = extended.images[n:].reshape(2, n, *cells.images.shape[1:])
  assert extended.images.dtype == np.uint8
  assert not np.array_equal(copies[0], cells.images) and not np.array_equal(copies[0], copies[1])


def test_cache_is_reused_and_keyed_by_everything_that_matters(cells, tmp_path):
  first, summary = offline.with_copies(cells, 1, SPEC, seed=0, cache_dir=str(tmp_path))
  stamp = os.stat(summary["cache"]).st_mtime_ns
  again, same = offline.with_copies(cells, 1, SPEC, seed=0, cache_dir=str(tmp_path))
  assert same["cache"] == summary["cache"] and os.stat(same["cache"]).st_mtime_ns == stamp
  np.testing.assert_array_equal(first.images, again.images)
  # The same copies come out of a fresh computation (the cache holds what would be made).
  np.testing.assert_array_equal(offline.make_copies(cells, SPEC, 1, 0), first.images[len(cells):])
  for change in (dict(seed=1), dict(spec="flip"), dict(copies=2)):
    args = {**dict(copies=1, spec=SPEC, seed=0), **change}
    _, other = offline.with_copies(cells, args["copies"], args["spec"], args["seed"],
                                   str(tmp_path))
    assert other["cache"] != summary["cache"], change


def test_batch_mixing_ops_are_refused_offline(cells, tmp_path):
  with pytest.raises(UserError, match="config.data.offline_augment: mixup and cutmix"):
    offline.with_copies(cells, 1, "flip|mixup(0.2)", seed=0, cache_dir=str(tmp_path))
