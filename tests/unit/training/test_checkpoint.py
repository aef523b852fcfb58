"""Checkpoints: a step saved again after the newest checkpoint was lost."""

import shutil

import numpy as np

from bloodcell_jax.training import checkpoint


def test_a_step_saved_again_after_the_newest_checkpoint_was_lost_is_kept(tmp_path):
  # The run that lost latest/<N> resumes from the one before and reaches N again, where
  # best/ may already hold N (from the first time): that save is skipped, not an error.
  checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=2)
  state = {"w": np.arange(4, dtype=np.float32)}
  for step in (5, 10):
    checkpoints.save(state, {"step": step}, best_score=float(step))
  checkpoints.wait()
  shutil.rmtree(tmp_path / "checkpoints" / "latest" / "10")
  checkpoints.latest.reload()

  checkpoints.save(state, {"step": 10}, best_score=10.0)
  checkpoints.wait()

  assert sorted(checkpoints.latest.all_steps()) == [5, 10] and checkpoints.best.all_steps() == [10]
  checkpoints.close()
