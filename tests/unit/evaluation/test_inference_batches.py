import jax
import numpy as np
import pytest

from bloodcell_jax.evaluation import inference


@pytest.mark.parametrize("batch_size, count, expected", [
    (256, 1000, 250),  # 4 batches of 250, none padded
    (256, 3, 3),  # a few images: one small batch
    (4, 10, 4),  # 3 batches: 4, 4, and 2 padded to 4
    (5, 0, 1),
])
def test_batches_are_as_equal_as_can_be(batch_size, count, expected):
  assert inference._padded_batch_size(batch_size, count) == expected


def test_batches_give_every_image_its_own_output_once():
  images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
  sizes = []

  def step(state, batch):
    sizes.append(batch.shape[0])
    batch = np.asarray(batch)
    return batch.sum(axis=(1, 2, 3)) + state, batch[:, 0, 0, 0]

  sums, firsts = inference._in_batches(step, 1.0, images, batch_size=4)
  assert sizes == [4, 4, 4]
  np.testing.assert_array_equal(sums, images.astype(np.float32).sum(axis=(1, 2, 3)) + 1.0)
  np.testing.assert_array_equal(firsts, images[:, 0, 0, 0])


def test_a_kept_executable_that_fails_to_run_is_removed_and_the_jitted_step_runs(
    tmp_path, monkeypatch):
  monkeypatch.setenv("BLOODCELL_JAX_COMPILATION_CACHE", str(tmp_path))
  kept = tmp_path / "executables"
  kept.mkdir()
  (kept / "broken.executable").write_bytes(b"")

  def broken(state, batch):
    raise jax.errors.JaxRuntimeError("NOT_FOUND: Function fusion.8 not found")

  ahead = inference.Ahead(lambda: broken, "broken.executable")
  jitted = lambda state, batch: np.asarray(batch).sum(axis=(1, 2, 3)) + state
  images = np.ones((3, 2, 2, 3), np.uint8)
  np.testing.assert_array_equal(inference.run_ahead(ahead, jitted, 1.0, images, 2), [13.0] * 3)
  assert not (kept / "broken.executable").exists()
