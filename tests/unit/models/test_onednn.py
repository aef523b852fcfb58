import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bloodcell_jax.models import layers, native, onednn, pooling, portable
from bloodcell_jax.models.depthwise import depthwise_conv2d
from helpers import skip_or_fail_without_the_kernels

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(scope="module", autouse=True)
def built():
  skip_or_fail_without_the_kernels()


def lowered_text(fn, *args) -> str:
  return jax.jit(lambda *a: fn(*a)).lower(*args).as_text()  # a new function: traced afresh


# (x shape, kernel size, output channels, strides, padding, groups, dtype)
CASES = [
    ((2, 7, 9, 5), 3, 6, (1, 1), "SAME", 1, jnp.float32),  # odd sizes: SAME pads more after
    ((2, 8, 8, 4), 3, 6, (2, 2), "SAME", 1, jnp.float32),
    ((3, 9, 7, 3), 4, 6, (4, 4), "VALID", 1, jnp.float32),  # ConvNeXt's stem drops rows
    ((2, 5, 6, 8), 1, 6, (1, 1), "SAME", 1, jnp.float32),
    ((2, 7, 7, 3), 5, 6, (2, 1), ((1, 3), (0, 2)), 1, jnp.float32),
    ((2, 7, 9, 6), 3, 6, (2, 2), "SAME", 6, jnp.float32),  # depthwise
    ((2, 6, 5, 6), 3, 9, (1, 1), "SAME", 3, jnp.float32),  # 3 groups of 2 -> 3
    ((2, 7, 9, 5), 3, 6, (1, 1), "SAME", 1, jnp.bfloat16),
    ((2, 8, 8, 4), 5, 4, (2, 2), "SAME", 4, jnp.bfloat16),
]


def outputs_and_grads(conv, cases, arrays):
  """For each case, the convolution of its (x, kernel) and its vjp of g: one program for all."""
  def run(arrays):
    results = []
    for (_, _, _, strides, padding, groups, _), (x, kernel, g) in zip(cases, arrays):
      forward = functools.partial(conv, window_strides=strides, padding=padding,
                                  dimension_numbers=NHWC, feature_group_count=groups)
      y, vjp = jax.vjp(forward, x, kernel)
      results.append((y, *vjp(g)))
    return results
  lowered = jax.jit(run).lower(arrays)
  return lowered.as_text(), lowered.compile()(arrays)


def test_matches_xla_forward_and_both_gradients():
  rng, arrays = np.random.default_rng(0), []  # numpy's: each jax.random shape compiles
  for shape, k, out, strides, padding, groups, dtype in CASES:
    x = jnp.asarray(rng.normal(size=shape), dtype)
    kernel = jnp.asarray(rng.normal(size=(k, k, shape[3] // groups, out)), dtype)
    y = jax.eval_shape(functools.partial(
        lax.conv_general_dilated, window_strides=strides, padding=padding,
        dimension_numbers=NHWC, feature_group_count=groups), x, kernel)
    arrays.append((x, kernel, jnp.asarray(rng.normal(size=y.shape), dtype)))
  text, ours = outputs_and_grads(onednn.conv_general_dilated, CASES, arrays)
  assert text.count("bloodcell_jax_onednn_conv") == 3 * len(CASES)
  # The reference in float32 on the same (rounded) inputs; bfloat16 outputs are rounded once.
  wide = jax.tree.map(lambda a: a.astype(jnp.float32), arrays)
  _, expected = outputs_and_grads(lax.conv_general_dilated, CASES, wide)
  for case, case_ours, case_expected in zip(CASES, ours, expected):
    dtype = case[-1]
    for actual, wanted in zip(case_ours, case_expected):
      assert actual.shape == wanted.shape and actual.dtype == dtype, case
      tolerance = (1e-5 if dtype == jnp.float32 else 1e-2) * float(jnp.abs(wanted).max())
      np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(wanted), rtol=0,
                                 atol=tolerance, err_msg=str(case))


def test_what_onednn_cannot_take_stays_with_xla(monkeypatch):
  x = jnp.ones((1, 6, 6, 4))
  batch_grouped = lambda x, k: onednn.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=NHWC, batch_group_count=2)
  dilated = lambda x, k: onednn.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC,
                                                     rhs_dilation=(2, 2))
  plain = lambda x, k: onednn.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
  assert "onednn" not in lowered_text(batch_grouped, jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 4)))
  assert "onednn" not in lowered_text(plain, x.astype(jnp.float16), jnp.ones((3, 3, 4, 4),
                                                                            jnp.float16))
  assert "onednn" not in lowered_text(dilated, x, jnp.ones((3, 3, 4, 4)))
  assert "onednn" in lowered_text(plain, x, jnp.ones((3, 3, 4, 4)))
  with portable.standard_ops():  # exports: only the standard ops
    assert "onednn" not in lowered_text(plain, x, jnp.ones((3, 3, 4, 4)))
  monkeypatch.setattr(jax, "device_count", lambda: 8)  # a sharded batch: XLA partitions it
  assert "onednn" not in lowered_text(plain, x, jnp.ones((3, 3, 4, 4)))


def test_the_models_convolutions_go_to_onednn_with_the_same_results(monkeypatch):
  """The CNN's fused convolution and pooling (pooling.py), every other model's layers.Conv and
  their depthwise convolutions."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  conv = layers.Conv(5, (3, 3), (2, 2), padding="SAME", use_bias=False)
  depthwise = jnp.asarray(rng.normal(size=(3, 3, 4)), jnp.float32)

  def both(x, kernel, depthwise):
    def loss(x, kernel, depthwise):
      pooled = pooling.conv_max_pool(x, kernel, train=True)
      return (pooled.sum() + conv.apply({"params": {"kernel": kernel}}, x).sum()
              + (depthwise_conv2d(x, depthwise, 2) ** 2).sum())
    return jax.value_and_grad(loss, (0, 1, 2))(x, kernel, depthwise)

  lowered = jax.jit(both).lower(x, kernel, depthwise)
  assert lowered.as_text().count("bloodcell_jax_onednn_conv") == 9  # 3 x (forward, 2 gradients)
  ours = lowered.compile()(x, kernel, depthwise)
  monkeypatch.setattr(native, "in_use", lambda: False)
  expected = jax.jit(both)(x, kernel, depthwise)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours,
               expected)
