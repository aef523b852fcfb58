"""EfficientNetV2 against keras.applications: ported weights, numerical parity, freezing (the
`keras_ref` fixture runs helpers/keras_reference.py in its own process)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.weights import keras_port
from configs import effnet_finetune30
from helpers.parity import (
  PARITY_TOLERANCE,
  compare_stages,
  freezing_against_keras,
  relative_error,
  run_with_intermediates,
)

pytestmark = pytest.mark.e2e

MODEL = {"b0": "efficientnetv2-b0", "s": "efficientnetv2-s"}


@pytest.mark.parametrize("stem, file_suffix", [
    ("b0_top", ".h5"), ("b0_top", "_model.h5"), ("b0_top", ".weights.h5"),
    ("b0_notop", ".h5"), ("b0_notop", ".weights.h5"), ("s_notop", ".h5")])
def test_ported_weights_reproduce_keras(keras_ref, stem, file_suffix):
  variant, top = stem.split("_")
  variables = keras_port.load_keras_weights(MODEL[variant], str(keras_ref / (stem + file_suffix)))
  model = models.get_model(MODEL[variant], num_classes=8, include_top=top == "top")
  out, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  # include_top: logits of the 8-class top; notop: the average-pooled features.
  assert relative_error(out, np.load(keras_ref / f"{stem}_output.npy")) <= PARITY_TOLERANCE
  compare_stages(intermediates, np.load(keras_ref / f"{stem}_blocks.npz"))


def test_stage_comparison_points_at_the_first_wrong_block(keras_ref):
  variables = keras_port.load_keras_weights(MODEL["s"], str(keras_ref / "s_notop.h5"))
  kernel = variables["params"]["block3b"]["project_conv"]["kernel"]
  variables["params"]["block3b"]["project_conv"]["kernel"] = kernel * 1.01
  model = models.get_model(MODEL["s"], include_top=False)
  _, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  with pytest.raises(AssertionError, match="first mismatch at block3b"):
    compare_stages(intermediates, np.load(keras_ref / "s_notop_blocks.npz"))


def test_keras_layer_order_is_keras(keras_ref):
  record = json.loads((keras_ref / "s_notop_freeze480.json").read_text())
  keras = [layer for layer in record["layers"] if layer[0] != "avg_pool"]  # pooling="avg"
  ours = models.get_spec(MODEL["s"]).keras.layers(False, {})
  assert len(ours) == len(keras) == 513
  assert [n for n, w in ours if w] == [n for n, w in keras if w]


def test_freezing_first_480_keras_layers_freezes_what_keras_does(keras_ref):
  record = json.loads((keras_ref / "s_notop_freeze480.json").read_text())
  config = effnet_finetune30.get_config()
  config.model.head = "none"
  assert config.optim.freeze_keras_layers == 480
  ours, keras = freezing_against_keras(config, record)
  assert ours == keras and sum(ours["freeze"].values()) == len(record["frozen"])


def test_bfloat16_compute_keeps_float32_parameters(keras_ref):
  variables = keras_port.load_keras_weights(MODEL["b0"], str(keras_ref / "b0_notop.h5"))
  images = np.load(keras_ref / "images.npy")
  full = jax.jit(models.get_model(MODEL["b0"], include_top=False).apply)(variables, images)
  half_model = models.get_model(MODEL["b0"], include_top=False, dtype=jnp.bfloat16)
  half = jax.jit(half_model.apply)(variables, images)  # op by op, bfloat16 is slow on CPU
  assert half.dtype == jnp.float32
  params = jax.eval_shape(half_model.init, jax.random.PRNGKey(0), images[:1])["params"]
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert relative_error(half, np.asarray(full)) < 0.05
