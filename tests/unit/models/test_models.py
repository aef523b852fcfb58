import glob
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models, runtime
from bloodcell_jax.augment import ops as augment
from bloodcell_jax.config import recipes
from bloodcell_jax.errors import UserError
from bloodcell_jax.models import layers, native, pooling, portable, winograd
from bloodcell_jax.models.layers import max_pool_2x2, normalize_input
from helpers import ROOT


def reference_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 2)])
def test_max_pool_and_its_gradient_match_reduce_window(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  np.testing.assert_array_equal(max_pool_2x2(x), reference_pool(x))
  cotangent = jax.random.normal(jax.random.PRNGKey(1), reference_pool(x).shape)
  ours = jax.grad(lambda x: jnp.vdot(max_pool_2x2(x), cotangent))(x)
  reference = jax.grad(lambda x: jnp.vdot(reference_pool(x), cotangent))(x)
  np.testing.assert_allclose(ours, reference, rtol=1e-6)


def assert_same_values_and_gradients(ours, reference, x, kernel, tolerance):
  expected = reference(x, kernel)
  got = jax.jit(ours)(x, kernel)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
  cotangent = jax.random.normal(jax.random.PRNGKey(2), expected.shape)
  gradients = lambda f: jax.jit(jax.grad(lambda x, k: jnp.vdot(f(x, k), cotangent),
                                         argnums=(0, 1)))
  for got, expected in zip(gradients(ours)(x, kernel), gradients(reference)(x, kernel)):
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("shape, kernel_size", [((2, 9, 7, 3), 3), ((1, 8, 8, 1), 5)])
def test_fused_conv_max_pool_equals_the_convolution_then_the_pooling(shape, kernel_size):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, shape[3], 16))
  assert pooling.cpu_method(shape, kernel_size, train=False) == "taps"
  # pooling._unfused: the convolution, then max_pool_2x2
  assert_same_values_and_gradients(pooling.conv_max_pool, pooling._unfused, x, kernel, 1e-4)


@pytest.mark.parametrize("shape, block", [((1, 7, 9, 4), 2), ((2, 8, 8, 5), 4),
                                          ((1, 7, 10, 3), 4), ((1, 2, 3, 2), 4)])
def test_winograd_conv_max_pool_equals_the_convolution_then_the_pooling(shape, block):
  """Odd sizes, whole blocks, sizes that are not whole blocks, a single window; the
  transforms by XLA (test_native.py: in C++)."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[3], 6))
  winograd_block = winograd._BY_BLOCK[block]  # pylint: disable=protected-access
  assert_same_values_and_gradients(winograd_block, pooling._unfused, x, kernel, 2e-5)


@pytest.mark.parametrize("train, method", [(True, "winograd_f2"), (False, "winograd_f4")])
def test_conv_max_pool_takes_winograd_for_wide_inputs(train, method, monkeypatch):
  """With XLA's fusions for Winograd's transforms (test_native.py: with the CPU kernels)."""
  shape = (2, 6, 6, pooling.MIN_WINOGRAD_CHANNELS["train"])
  monkeypatch.setattr(native, "in_use", lambda: False)
  assert pooling.cpu_method(shape, 3, train) == method
  assert pooling.cpu_method(shape[:3] + (16,), 3, train) == "unfused"
  assert pooling.cpu_method(shape, 5, train) == "unfused"
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[3], 8)) / 8
  ours = lambda x, k: pooling.conv_max_pool(x, k, train=train)
  assert_same_values_and_gradients(ours, pooling._unfused, x, kernel, 2e-5)


def test_cnn_trains_and_predicts_with_the_same_parameters():
  model = models.get_model("cnn", num_classes=3, filters=(4, 64, 8), dense_units=6, norm="batch")
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), maxval=255.0)
  init = jax.jit(model.init, static_argnames="train")  # jitted: op by op takes 10 s
  initialised = [init(jax.random.PRNGKey(1), x, train=train) for train in (False, True)]
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), *initialised))
  with portable.standard_ops():  # the unfused convolution and pooling, as exported
    unfused = jax.jit(lambda v, x: model.apply(v, x))(initialised[0], x)  # a trace of its own
  fused = jax.jit(lambda v, x: model.apply(v, x))(initialised[0], x)
  np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)


def test_cnn_without_norm_equals_the_study_block_order():
  """Conv -> Pool -> ReLU (ours) equals the study's Conv -> ReLU -> Pool."""
  model = models.get_model("cnn", num_classes=8, filters=(4, 8), dense_units=6)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), maxval=255.0)
  variables = model.init(jax.random.PRNGKey(1), x)
  params = variables["params"]
  h = x / 255.0
  for i in range(2):
    conv = params[f"conv{i}"]
    h = jax.lax.conv_general_dilated(h, conv["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
    h = reference_pool(jax.nn.relu(h))
  h = jax.nn.relu(h.reshape(2, -1) @ params["dense"]["kernel"] + params["dense"]["bias"])
  expected = h @ params["logits"]["kernel"] + params["logits"]["bias"]
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm, head, collections", [
    ("batch", "flatten", {"params", "batch_stats"}),
    ("group", "gap", {"params"}),
    ("none", "gap", {"params"}),
])
def test_cnn_variants(norm, head, collections):
  model = models.get_model("cnn", num_classes=5, filters=(4, 8, 8, 8), dense_units=6,
                           norm=norm, head=head, activation="leaky_relu")
  x = jnp.ones((3, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert set(variables) == collections
  logits = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)},
                       mutable=["batch_stats"])[0]
  assert logits.shape == (3, 5)
  dense_in = variables["params"]["dense"]["kernel"].shape[0]
  assert dense_in == (8 * 2 * 2 if head == "flatten" else 8)


def test_bfloat16_compute_keeps_float32_parameters():
  model = models.get_model("cnn", filters=(4, 4, 4, 4), dense_units=4, dtype=jnp.bfloat16)
  variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert model.apply(variables, jnp.ones((1, 32, 32, 3))).dtype == jnp.float32


@pytest.mark.parametrize("native", [True, False])
def test_automatic_dtype_is_bfloat16_only_on_a_cpu_that_multiplies_it(monkeypatch, native):
  monkeypatch.setattr(runtime, "cpu_multiplies_bfloat16", lambda: native)
  config = recipes.load_config_file(os.path.join(ROOT, "configs", "effnet.py"))
  with config.unlocked():
    config.model.dtype = "auto"
  expected = jnp.bfloat16 if native else jnp.float32
  assert models.build_model(config, 8).dtype == expected
  with config.unlocked():
    config.model.dtype = "float32"  # asked for: kept on any CPU
  assert models.build_model(config, 8).dtype == jnp.float32
  with config.unlocked():
    config.model.dtype = "half-ish"
  with pytest.raises(UserError, match=r"config.model.dtype='half-ish': .*\(or auto\)"):
    models.build_model(config, 8)


def test_unknown_model_and_knobs_are_user_errors():
  with pytest.raises(UserError, match="config.model.name='resnet': unknown model"):
    models.get_model("resnet")
  with pytest.raises(UserError, match="config.model.norm='layer'"):
    models.get_model("cnn", norm="layer")


RECIPES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "default.py", "effnet_common.py"))


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_every_recipe_builds_its_model_and_augmentation(path):
  config = recipes.load_config_file(path)
  for where in ("train", "eval_strong"):
    augment.parse(config.augment[where], f"config.augment.{where}")
  model = models.build_model(config, 8)
  assert model.input_norm == config.model.get("input_norm", "none")


def test_input_normalisations_remove_what_they_claim():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(40, 200, (2, 16, 16, 3)), jnp.float32)
  gains, offsets = jnp.asarray([0.7, 1.0, 1.3]), jnp.asarray([10.0, -5.0, 20.0])
  # grey world: a white balance (channel gains) is gone; standardised: gains and offsets.
  np.testing.assert_allclose(normalize_input(x * gains, "grey_world"),
                             normalize_input(x, "grey_world") * jnp.mean(gains * x.mean(
                                 (1, 2), keepdims=True), -1, keepdims=True) /
                             x.mean((1, 2, 3), keepdims=True), rtol=1e-4)
  np.testing.assert_allclose(normalize_input(x * gains + offsets, "channel_standardize"),
                             normalize_input(x, "channel_standardize"), rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(normalize_input(x, "none"), x)


STAIN_VECTORS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]], np.float32)  # H, E


def beer_lambert_slide(background, strength, hue=(1.0, 1.0, 1.0)):
  """A cell made by Beer-Lambert's law: background light through a nucleus (haematoxylin) and
  cytoplasm (eosin), the stain `strength` times as dense, each channel's density scaled by
  `hue` (another stain's colour)."""
  rows, cols = np.mgrid[:32, :32]
  nucleus = (np.hypot(rows - 16, cols - 15) < 6).astype(np.float32)
  cytoplasm = (np.hypot(rows - 16, cols - 15) < 11).astype(np.float32) - nucleus
  density = strength * np.asarray(hue, np.float32) * (
      nucleus[..., None] * 1.2 * STAIN_VECTORS[0] + cytoplasm[..., None] * 0.3 * STAIN_VECTORS[1])
  return jnp.asarray(np.asarray(background, np.float32) * np.exp(-density))[None]


def test_stain_density_ignores_the_lamp_the_camera_and_the_stain_strength():
  pbc = normalize_input(beer_lambert_slide((254, 231, 206), 1.0), "stain_density")
  other = normalize_input(beer_lambert_slide((200, 221, 188), 1.6), "stain_density")  # Bio-Net
  np.testing.assert_allclose(other, pbc, atol=6.0)
  assert float(pbc[0, 16, 15, 0]) < 80 and float(pbc[0, 0, 0, 0]) > 250  # dark nucleus, white
  assert len({float(v) for v in np.ravel(pbc[0, 16, 15])}) == 1  # grey


def test_relative_density_ignores_the_stain_hue_and_keeps_the_cytoplasm_colour():
  pbc = normalize_input(beer_lambert_slide((254, 231, 206), 1.0), "relative_density")
  # Another lab: a yellow lamp, a stronger stain of another hue (denser in red).
  other = normalize_input(beer_lambert_slide((200, 221, 188), 1.6, hue=(1.3, 1.0, 1.0)),
                          "relative_density")
  np.testing.assert_allclose(other, pbc, atol=6.0)
  nucleus, cytoplasm, background = pbc[0, 16, 15], pbc[0, 16, 24], pbc[0, 0, 0]
  assert float(nucleus.max()) < 50 and float(background.min()) > 250  # dark nucleus, white
  # The eosin-stained cytoplasm absorbs green far more, relative to the nucleus, than red: a
  # colour that stain_density's grey loses.
  assert float(cytoplasm[0]) - float(cytoplasm[1]) > 50




def test_mix_style_swaps_feature_statistics_and_keeps_the_content():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 4)) * jnp.arange(1.0, 7.0)[:, None,
                                                                                     None, None]
  mixed = layers.mix_style(x, jax.random.PRNGKey(1), p=1.0)
  standardised = lambda a: ((a - a.mean(axis=(1, 2), keepdims=True))
                            / a.std(axis=(1, 2), keepdims=True))
  np.testing.assert_allclose(standardised(mixed), standardised(x), atol=1e-3)  # same content
  std, mixed_std = x.std(axis=(1, 2)), mixed.std(axis=(1, 2))
  assert not np.allclose(mixed_std, std, rtol=1e-2)  # other styles
  assert np.all((mixed_std >= std.min() - 1e-4) & (mixed_std <= std.max() + 1e-4))  # blends
  np.testing.assert_array_equal(layers.mix_style(x, jax.random.PRNGKey(1), p=0.0), x)


def test_mix_style_changes_training_only():
  small = dict(num_classes=3, filters=(4, 8), dense_units=8, norm="batch", head="gap",
               dropout=0.0)  # no dropout: any difference in training is MixStyle's
  model = models.get_model("cnn", mix_style=1.0, **small)
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3)) * 255
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)  # jitted: op by op is slow
  plain = models.get_model("cnn", **small)
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, images),
                                jax.jit(plain.apply)(variables, images))
  trained = lambda m: jax.jit(lambda v: m.apply(v, images, train=True, mutable=["batch_stats"],
                                                 rngs={"dropout": jax.random.PRNGKey(3)})[0])(
                                                     variables)
  assert not np.allclose(trained(model), trained(plain))
  with pytest.raises(UserError, match=r"config\.model\.mix_style=1\.5: expected a probability"):
    models.get_model("cnn", mix_style=1.5)
