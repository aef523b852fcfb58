"""Checkpoints: a step saved again after the newest checkpoint was lost; restored weights
checked against the model they are loaded into."""

import shutil

import jax
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.training import checkpoint, sharding, steps


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


def _tiny_cnn():
  return models.get_model("cnn", num_classes=3, filters=(4, 8), dense_units=8, norm="batch")


def test_restored_weights_predict_as_the_model_they_came_from():
  model = _tiny_cnn()
  params, batch_stats = steps.init_variables(model, jax.random.PRNGKey(3), 16)
  variables = jax.device_get({"params": params, "batch_stats": batch_stats})
  state = steps.inference_state(model, variables, 16, sharding.make_mesh())
  images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(
      steps.predict_step(state, images, np.float32(1.0), model=model),
      jax.nn.softmax(model.apply(variables, images, train=False)), rtol=1e-5, atol=1e-7)


def test_weights_of_another_model_are_refused_naming_the_first_difference():
  params, batch_stats = steps.variable_shapes(_tiny_cnn(), 16)
  wider = {**params, "conv1": {"kernel": np.zeros((3, 3, 4, 16), np.float32)}}
  with pytest.raises(ValueError, match=r"params\['conv1'\]\['kernel'\]: \(3, 3, 4, 16\) in the "
                     r"checkpoint, \(3, 3, 4, 8\) in the model"):
    steps.inference_state(_tiny_cnn(), {"params": wider, "batch_stats": batch_stats}, 16,
                          sharding.make_mesh())
  with pytest.raises(ValueError, match=r"batch_stats\['norm0'\]\['mean'\]: missing"):
    steps.inference_state(_tiny_cnn(), {"params": params}, 16, sharding.make_mesh())
