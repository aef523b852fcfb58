"""ConvNeXt and MobileNetV3: keras.applications' parameter counts and depth rounding, and no
grouped convolution on CPU (the parity with Keras is
tests/e2e/test_convnext_mobilenet_parity.py)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.models import mobilenet_v3


def test_every_variant_has_keras_parameter_count():
  # count_params() of keras.applications.<constructor>(weights=None), 1000 classes.
  keras_counts = {"convnext-tiny": 28589128, "convnext-small": 50223688,
                  "convnext-base": 88591464, "convnext-large": 197767336,
                  "convnext-xlarge": 350196968, "mobilenetv3-small": 2554968,
                  "mobilenetv3-large": 5507432}
  for name, expected in keras_counts.items():
    model = models.get_model(name, num_classes=1000)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0),
                                                   jnp.zeros((1, 64, 64, 3))))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected, name
  # alpha and minimalistic, against keras.applications.MobileNetV3{Large,Small} without top.
  for name, kwargs, expected in (("mobilenetv3-large", {"alpha": 0.75}, 1808736),
                                 ("mobilenetv3-small", {"minimalistic": True}, 441000)):
    model = models.get_model(name, include_top=False, **kwargs)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected, kwargs


def test_keras_depth_rounding():
  # Nearest multiple of 8, at least 8, and never more than 10% down (10 -> 16, not 8).
  assert [mobilenet_v3.depth(v) for v in (4, 10, 12, 33.6, 66, 72)] == [8, 16, 16, 32, 64, 72]


@pytest.mark.parametrize("name", ["convnext-tiny", "mobilenetv3-small"])
def test_cpu_train_step_has_no_grouped_convolution(name):
  """Every depthwise convolution, forward and backward, goes through the project's CPU path
  (oneDNN's or the one in models/depthwise.py): XLA:CPU's grouped convolution is ~100x slower."""
  model = models.get_model(name, num_classes=8, head="flatten")
  images = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)

  def loss(params, others):
    logits, _ = model.apply({**others, "params": params}, images, train=True,
                            rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
    return logits.sum()
  others = {k: v for k, v in variables.items() if k != "params"}
  hlo = jax.jit(jax.grad(loss)).lower(variables["params"], others).as_text()
  # the dense convolutions are there (XLA's or oneDNN's, models/onednn.py)...
  assert "stablehlo.convolution" in hlo or "bloodcell_jax_onednn_conv" in hlo
  assert not re.search(r"feature_group_count = (?!1\b)\d+", hlo)  # ...and none is grouped
