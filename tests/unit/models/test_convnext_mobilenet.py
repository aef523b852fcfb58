"""ConvNeXt and MobileNetV3 against keras.applications: ported weights, parity, freezing."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.models import mobilenet_v3
from bloodcell_jax.weights import keras_port
from configs import default
from helpers.parity import (
  PARITY_TOLERANCE,
  compare_stages,
  freezing_against_keras,
  relative_error,
  run_with_intermediates,
)

MODEL = {"convnext_tiny": "convnext-tiny", "convnext_small": "convnext-small",
         "mobilenetv3_small": "mobilenetv3-small", "mobilenetv3_large": "mobilenetv3-large"}


def parts(stem: str):
  """("convnext_tiny_top") -> (model name, include_top, constructor arguments)."""
  base, top = stem.rsplit("_", 1)
  args = {"alpha": 0.75} if base.endswith("_alpha075") else {}
  return MODEL[base.removesuffix("_alpha075")], top == "top", args


@pytest.mark.parametrize("stem, file_suffixes", [
    ("convnext_tiny_top", (".weights.h5",)), ("convnext_tiny_notop", (".h5",)),
    ("mobilenetv3_small_top", (".h5", "_model.h5", ".weights.h5")),
    ("mobilenetv3_small_notop", (".h5",)), ("mobilenetv3_large_notop", (".weights.h5",)),
    ("mobilenetv3_small_alpha075_notop", (".weights.h5",))])
def test_ported_weights_reproduce_keras(keras_ref, stem, file_suffixes):
  name, top, args = parts(stem)
  variables, *others = (keras_port.load_keras_weights(name, str(keras_ref / (stem + suffix)), args)
                        for suffix in file_suffixes)
  for other in others:  # every format ports to the same variables
    jax.tree.map(np.testing.assert_array_equal, other, variables)
  model = models.get_model(name, num_classes=8, include_top=top, **args)
  out, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  # include_top: logits of the 8-class top; notop: the pooled features (ConvNeXt: then its
  # final LayerNorm).
  assert relative_error(out, np.load(keras_ref / f"{stem}_output.npy")) <= PARITY_TOLERANCE
  compare_stages(intermediates, np.load(keras_ref / f"{stem}_blocks.npz"))


def test_stage_comparison_points_at_the_first_wrong_block(keras_ref):
  variables = keras_port.load_keras_weights(MODEL["mobilenetv3_small"],
                                            str(keras_ref / "mobilenetv3_small_notop.h5"))
  kernel = variables["params"]["expanded_conv_6"]["project"]["kernel"]
  variables["params"]["expanded_conv_6"]["project"]["kernel"] = kernel * 1.01
  model = models.get_model(MODEL["mobilenetv3_small"], include_top=False)
  _, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  with pytest.raises(AssertionError, match="first mismatch at expanded_conv_6"):
    compare_stages(intermediates, np.load(keras_ref / "mobilenetv3_small_notop_blocks.npz"))


@pytest.mark.parametrize("stem, first_n", [("convnext_small_notop", 200),
                                           ("mobilenetv3_small_notop", 120)])
def test_keras_layer_order_and_first_n_freezing_are_keras(keras_ref, stem, first_n):
  record = json.loads((keras_ref / f"{stem}_freeze{first_n}.json").read_text())
  name, _, _ = parts(stem)
  # Without pooling="avg"'s layer (ConvNeXt: before its final LayerNorm, which Keras numbers
  # by how many it made in the process).
  keras_layers = [[re.sub(r"^layer_normalization_\d+$", "layer_normalization", n), w]
                  for n, w in record["layers"]
                  if not re.fullmatch(r"global_average_pooling2d(_\d+)?|avg_pool", n)]
  ours = models.get_spec(name).keras.layers(False, {})
  assert len(ours) == len(keras_layers)
  assert [n for n, w in ours if w] == [n for n, w in keras_layers if w]
  config = default.get_config(model=name)
  config.model.head = "none"
  config.optim.freeze_keras_layers = first_n
  ours, keras = freezing_against_keras(config, record)
  assert ours == keras and sum(ours["freeze"].values()) == len(record["frozen"])


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
  """Every depthwise convolution, forward and backward, goes through the project's CPU path:
  XLA:CPU's grouped convolution is ~100x slower."""
  model = models.get_model(name, num_classes=8, head="flatten")
  images = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)

  def loss(params, others):
    logits, _ = model.apply({**others, "params": params}, images, train=True,
                            rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
    return logits.sum()
  others = {k: v for k, v in variables.items() if k != "params"}
  hlo = jax.jit(jax.grad(loss)).lower(variables["params"], others).as_text()
  assert "stablehlo.convolution" in hlo  # the dense convolutions are there...
  assert not re.search(r"feature_group_count = (?!1\b)\d+", hlo)  # ...and none is grouped
