"""ConvNeXt and MobileNetV3 against keras.applications: ported weights, parity, freezing (the
`keras_ref` fixture runs helpers/keras_reference.py in its own process)."""

import json
import re

import jax
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.weights import keras_port
from configs import default
from helpers.parity import (
  PARITY_TOLERANCE,
  compare_stages,
  freezing_against_keras,
  relative_error,
  run_with_intermediates,
)

pytestmark = pytest.mark.e2e

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
