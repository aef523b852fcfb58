"""Grad-CAM heat maps (bloodcell_jax/evaluation/explain.py), on a model whose answer depends on
one quarter of the image only."""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
import pytest

from bloodcell_jax.evaluation import explain

SIZE = 16


class State(NamedTuple):
  params: Any
  batch_stats: Any


class TopLeftModel(nn.Module):
  """Logits from the top-left quarter of a convolution's feature map."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x / 255.0))
    half = x.shape[1] // 2
    return nn.Dense(3, name="logits")(x[:, :half, :half].mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def model_and_state():
  model = TopLeftModel()
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, SIZE, SIZE, 3), np.float32))
  return model, State(variables["params"], {})


def images(n=4, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)


def test_gradcam_uses_the_last_feature_map_and_follows_the_content(model_and_state):
  model, state = model_and_state
  assert explain.last_feature_map(model, state, (SIZE, SIZE, 3)) == "conv"
  pictures = np.zeros((2, SIZE, SIZE, 3), np.uint8)
  pictures[:, :SIZE // 2, :SIZE // 2] = images(2)[:, :SIZE // 2, :SIZE // 2]
  maps = explain.explain(model, state, pictures, np.array([0, 1]), batch_size=1)
  assert maps.shape == (2, SIZE, SIZE)
  assert maps[:, :SIZE // 2, :SIZE // 2].mean() > maps[:, SIZE // 2:, SIZE // 2:].mean()


def test_a_picture_shows_the_image_beside_its_heat_map():
  image = images(1)[0]
  picture = explain.overlay(image, np.linspace(0, 1, SIZE * SIZE).reshape(SIZE, SIZE), scale=2)
  assert picture.shape == (2 * SIZE, 4 * SIZE, 3) and picture.dtype == np.uint8
  np.testing.assert_array_equal(picture[::2, :2 * SIZE:2], image)
  assert explain.png_name("neutrophil/a b.jpg", "monocyte") == "neutrophil__a b.monocyte.png"
