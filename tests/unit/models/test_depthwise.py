import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bloodcell_jax.models import native
from bloodcell_jax.models.depthwise import depthwise_conv2d


def reference(x, kernel, stride):
  return lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1])


def output_and_grads(conv, stride):
  """Jitted (y, dy/dx . g, dy/dkernel . g) for a given output cotangent g."""
  def run(x, kernel, g):
    y, vjp = jax.vjp(lambda x, kernel: conv(x, kernel, stride), x, kernel)
    return (y, *vjp(g))
  return jax.jit(run)


def assert_close(actual, expected, rel):
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(expected, np.float32),
                             rtol=0, atol=rel * scale)


def inputs(shape, k, stride, dtype=jnp.float32):
  n, h, w, c = shape
  keys = jax.random.split(jax.random.PRNGKey(h * 31 + w * 7 + k + stride), 3)
  x = jax.random.normal(keys[0], shape, dtype)
  kernel = jax.random.normal(keys[1], (k, k, c), dtype)
  g = jax.random.normal(keys[2], (n, -(-h // stride), -(-w // stride), c), dtype)
  return x, kernel, g


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5, 7])  # EfficientNet, MobileNetV3, ConvNeXt
@pytest.mark.parametrize("hw", [(7, 7), (8, 8), (1, 1), (2, 2)])
def test_output_and_gradients_match_grouped_convolution(hw, k, stride):
  x, kernel, g = inputs((2, *hw, 3), k, stride)
  ours = output_and_grads(depthwise_conv2d, stride)(x, kernel, g)
  expected = output_and_grads(reference, stride)(x, kernel, g)
  for a, b in zip(ours, expected):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert_close(a, b, 1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_blocked_kernel_gradient_on_larger_maps(stride):
  """Outputs wider than one 6x6 block (and not a multiple of it) for the kernel gradient."""
  x, kernel, g = inputs((2, 27, 14, 4), 3, stride)
  ours = output_and_grads(depthwise_conv2d, stride)(x, kernel, g)
  expected = output_and_grads(reference, stride)(x, kernel, g)
  for a, b in zip(ours, expected):
    assert_close(a, b, 1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_bfloat16_in_bfloat16_out(stride):
  x, kernel, g = inputs((2, 8, 8, 4), 3, stride, jnp.bfloat16)
  y, dx, dk = output_and_grads(depthwise_conv2d, stride)(x, kernel, g)
  assert (y.dtype, dx.dtype, dk.dtype) == (jnp.bfloat16,) * 3
  as_f32 = [v.astype(jnp.float32) for v in (x, kernel, g)]
  for a, b in zip((y, dx, dk), output_and_grads(reference, stride)(*as_f32)):
    assert_close(a, b, 2e-2)


def test_grad_of_a_sum_with_and_without_jit():
  x, kernel, _ = inputs((2, 6, 6, 3), 3, 1)

  def loss(conv):
    return lambda x, kernel: jnp.sum(jnp.tanh(conv(x, kernel, 1)))

  expected = jax.grad(loss(reference), (0, 1))(x, kernel)
  for grad_fn in (jax.grad(loss(depthwise_conv2d), (0, 1)),
                  jax.jit(jax.grad(loss(depthwise_conv2d), (0, 1)))):
    for a, b in zip(grad_fn(x, kernel), expected):
      assert_close(a, b, 1e-5)


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
def test_grouped_convolution_is_only_used_off_cpu(platform):
  shapes = [jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32),
            jax.ShapeDtypeStruct((3, 3, 4), jnp.float32)]
  grad_fn = jax.jit(jax.grad(lambda x, kernel: jnp.sum(depthwise_conv2d(x, kernel, 2)), (0, 1)))
  with native.serialized():  # as exports trace (models/native.py)
    module = jax.export.export(grad_fn, platforms=[platform])(*shapes).mlir_module()
  assert ("stablehlo.convolution" in module) == (platform != "cpu")


def test_rejects_a_kernel_that_does_not_match():
  with pytest.raises(ValueError, match="kernel"):
    depthwise_conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2)), 1)
