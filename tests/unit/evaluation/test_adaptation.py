"""BatchNorm adaptation (AdaBN): the adapted statistics are those of the target images."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from bloodcell_jax.data import synthetic
from bloodcell_jax.evaluation import adaptation
from bloodcell_jax.training import sharding, steps

SIZE = 48


@pytest.fixture(scope="module")
def cells():
  """Drawn cells (uint8), big enough for the blurs and occlusions to show."""
  return synthetic.generate(6, SIZE, seed=3).images


class _ConvBatchNorm(nn.Module):
  """Conv -> BatchNorm -> Dropout: AdaBN's subject."""
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), name="conv")(x / 255.0)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="norm")(x)
    return nn.Dropout(self.dropout, deterministic=not train)(x).mean(axis=(1, 2))


def test_adapted_batchnorm_statistics_are_the_target_images(cells):
  model = _ConvBatchNorm()
  mesh = sharding.make_mesh()
  state, _ = steps.create_train_state(model, lambda p: optax.identity(),
                                      jax.random.PRNGKey(0), SIZE, mesh)
  target = cells.astype(np.float32) * 0.5 + 40.0  # a dimmer, lower-contrast lab
  adapted = adaptation.adapt_batch_stats(model, state, target, batch_size=3)
  conv = nn.Conv(4, (3, 3)).apply({"params": jax.device_get(state.params["conv"])},
                                  target / 255.0)
  halves = np.split(np.asarray(conv), 2)  # the two batches of 3: the mean of their statistics
  mean = np.mean([h.mean(axis=(0, 1, 2)) for h in halves], axis=0)
  var = np.mean([h.var(axis=(0, 1, 2)) for h in halves], axis=0)
  stats = jax.device_get(adapted.batch_stats["norm"])
  np.testing.assert_allclose(stats["mean"], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["var"], var, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(jax.device_get(adapted.params["conv"]["kernel"]),
                                jax.device_get(state.params["conv"]["kernel"]))


def test_pseudo_labels_keep_the_confident_share_of_each_predicted_class_among_allowed_ones():
  probabilities = np.array([
      [0.90, 0.05, 0.05],  # class 0, confident
      [0.80, 0.15, 0.05],  # class 0, less so: outside class 0's most confident half
      [0.88, 0.07, 0.05],  # class 0, in its most confident half
      [0.25, 0.70, 0.05],  # class 1 at 0.74: the less confident half of class 1
      [0.10, 0.30, 0.60],  # class 2 is not allowed: renormalised, class 1 at 0.75, kept
      [0.40, 0.35, 0.25],  # class 0 at 0.53 among the allowed: below the confidence
  ])
  indices, labels = adaptation.confident_picks(
      probabilities, allowed=np.array([True, True, False]), min_confidence=0.7,
      class_fraction=0.5)
  np.testing.assert_array_equal(indices, [0, 2, 4])
  np.testing.assert_array_equal(labels, [0, 0, 1])
  # A class favoured by the model does not crowd out the others: a share of each.
  many = np.array([[0.95, 0.05]] * 10 + [[0.2, 0.8]] * 3)
  _, labels = adaptation.confident_picks(many, np.array([True, True]), 0.5, 0.5)
  assert np.bincount(labels).tolist() == [5, 2]
