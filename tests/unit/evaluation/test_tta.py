"""Test-time augmentation in the jitted steps: the views, and predictions and metrics of
their averaged probabilities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import classification, tta
from bloodcell_jax.training import steps
from configs import default


def test_tta_views_are_the_flips_and_the_dihedral_group():
  image = np.arange(4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)  # no symmetry
  for name, count in (("flips", 4), ("d4", 8)):
    views = np.concatenate(tta.VIEWS.get(name)(jnp.asarray(image)))
    assert views.shape == (count, 4, 4, 3)
    np.testing.assert_array_equal(views[0], image[0])  # the image itself first
    assert len({v.tobytes() for v in views}) == count
    expected = {np.rot90(m, k).tobytes() for k in range(4) for m in (image[0], image[0][:, ::-1])}
    assert {v.tobytes() for v in views} <= expected
  assert tta.views_of("") is None and tta.VIEWS.names() == ["flips", "d4"]
  with pytest.raises(UserError, match="^--tta='d8': unknown TTA view set \\(known: flips, d4\\)$"):
    tta.views_of("d8", "--tta")
  flips = {v.tobytes() for v in np.concatenate(tta.VIEWS.get("flips")(jnp.asarray(image)))}
  assert flips == {image[0].tobytes(), image[0][:, ::-1].tobytes(), image[0][::-1].tobytes(),
                   image[0][::-1, ::-1].tobytes()}


@pytest.fixture(scope="module")
def tiny_model():
  config = default.get_config()
  config.model.filters, config.model.dense_units, config.model.norm = (4, 4, 8, 8), 8, "batch"
  model = models.build_model(config, num_classes=5)
  params, batch_stats = jax.jit(functools.partial(steps.init_variables, model, image_size=16))(
      jax.random.PRNGKey(0))
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                           opt_state=(), rng=jax.random.PRNGKey(1))
  return model, state


def test_tta_prediction_is_the_mean_of_the_views_probabilities_in_one_jitted_step(tiny_model):
  model, state = tiny_model
  images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
  d4 = tta.views_of("d4")
  predict = jax.jit(functools.partial(steps.predict_step, model=model, views=d4))
  got = np.asarray(predict(state, images, 1.5))
  single = jax.jit(functools.partial(steps.predict_step, model=model))
  views = [np.rot90(m, k, axes=(1, 2)) for m in (images, images[:, :, ::-1]) for k in range(4)]
  want = np.mean([np.asarray(single(state, np.ascontiguousarray(v), 1.5)) for v in views], 0)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)

  # The eval step's metrics are those of the same averaged probabilities.
  batch = {"image": images, "label": np.array([0, 1, 2], np.int32),
           "mask": np.array([1.0, 1.0, 0.0], np.float32)}
  computed = jax.jit(functools.partial(steps.eval_step, model=model, views=d4))(
      state, batch).compute()
  log_probs = np.asarray(jax.jit(functools.partial(steps.outputs_step, model=model, views=d4))(
      state, batch)[0])
  summary = classification.summarize_outputs(log_probs[:2], batch["label"][:2], "abcde", "val")
  assert float(computed["loss"]) == pytest.approx(summary["val_loss"], rel=1e-5)
  assert float(computed["accuracy"]) == pytest.approx(summary["val_accuracy"])
