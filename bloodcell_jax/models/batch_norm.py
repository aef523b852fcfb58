"""BatchNorm whose training statistics are matrix products on a CPU.

XLA:CPU splits a large reduction (the batch and every pixel, per channel) into a tree of
reduce-windows, for precision, which run at a few GB/s: in the CNN's train step the
BatchNorm statistics and their gradients took a quarter of the step
(benchmarks/profile_step.py). A product with a vector of ones sums the same columns at
memory speed: 15x faster on a 64 x 48 x 48 x 32 batch, and more precise. Other platforms
keep XLA's reductions. The gradient is written out (the textbook BatchNorm backward pass) so
that its two reductions are products too: the CNN's train step ran 15-20% faster, and
EfficientNetV2-S's 20%. A product reads its operand from memory, though: where the gradient
reaching a BatchNorm is a fusion XLA has not written out (MobileNetV3's hard-swish,
squeeze-excitation and depthwise gradients), XLA recomputes it for each product, and that
step ran 20% slower; such a model asks for JAX's own derivative (`product_gradient=False`).

Variables, initial values, running-average update and numerics are flax.linen.BatchNorm's
with its default fast variance (E[x^2] - E[x]^2, clipped at 0), so checkpoints, Keras
ports and AdaBN carry over unchanged.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Rows are summed in `groups` interleaved running sums of up to this many values side by side
# (then added up): faster than one sum per column for few channels, and more precise.
_SUMS_SIDE_BY_SIDE = 2048


def _sum_rows_as_product(x2d: jnp.ndarray) -> jnp.ndarray:
  rows, channels = x2d.shape
  groups = math.gcd(rows, max(1, _SUMS_SIDE_BY_SIDE // channels))
  side_by_side = x2d.reshape(rows // groups, groups * channels)
  return (jnp.ones((rows // groups,), x2d.dtype) @ side_by_side).reshape(groups, channels).sum(0)


def column_sums(x2d: jnp.ndarray) -> jnp.ndarray:
  """(M, C) -> (C,): a product with ones on a CPU, XLA's reduction elsewhere."""
  return lax.platform_dependent(x2d, cpu=_sum_rows_as_product, default=lambda a: a.sum(0))


def _channel_sums(x):
  return column_sums(x.reshape(-1, x.shape[-1]))


def _statistics(x):
  count = x.size // x.shape[-1]
  mean = _channel_sums(x) / count
  var = jnp.maximum(_channel_sums(x * x) / count - mean * mean, 0.0)
  return mean, var


def _normalize(x, scale, bias, epsilon):
  mean, var = _statistics(x)
  inv_std = lax.rsqrt(var + epsilon)
  normalized = (x - mean) * inv_std
  return normalized * scale + bias, mean, var, (normalized, inv_std)


# The elementwise work stays in the activations' own shape: on (pixels, channels) views XLA:CPU
# chose other layouts and fusions around depthwise convolutions (MobileNetV3 ran 2x slower).
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalize_with_product_gradient(x, scale, bias, epsilon):
  return _normalize(x, scale, bias, epsilon)[:3]


def _normalize_fwd(x, scale, bias, epsilon):
  y, mean, var, residuals = _normalize(x, scale, bias, epsilon)
  return (y, mean, var), (*residuals, scale)


def _normalize_bwd(epsilon, residuals, cotangents):
  # The batch mean and variance leave through stop_gradient (normalize_by_batch): only the
  # running averages use them, so their cotangents are zero and are not read.
  del epsilon
  normalized, inv_std, scale = residuals
  g = cotangents[0]
  count = g.size // g.shape[-1]
  sum_g, sum_g_normalized = _channel_sums(g), _channel_sums(g * normalized)
  dx = (scale * inv_std / count) * (count * g - sum_g - normalized * sum_g_normalized)
  return dx, sum_g_normalized, sum_g


_normalize_with_product_gradient.defvjp(_normalize_fwd, _normalize_bwd)


def normalize_by_batch(x, scale, bias, epsilon: float, compute_dtype,
                       product_gradient: bool = True):
  """BatchNorm in training mode over every axis but the last: (normalized x, batch mean,
  batch variance), the statistics without gradient. With `product_gradient` the gradient's
  sums are products too (above); without, JAX differentiates the forward pass, and XLA
  computes those sums as reductions that it may fuse with whatever produced the gradient."""
  normalize = _normalize_with_product_gradient if product_gradient else \
      lambda *args: _normalize(*args)[:3]
  y, mean, var = normalize(x.astype(compute_dtype), scale.astype(compute_dtype),
                           bias.astype(compute_dtype), epsilon)
  return y, lax.stop_gradient(mean), lax.stop_gradient(var)


class BatchNorm(nn.Module):
  """flax.linen.BatchNorm over the last axis, with scale and bias, as the models use it."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: jnp.dtype = None
  param_dtype: jnp.dtype = jnp.float32
  force_float32_reductions: bool = True
  product_gradient: bool = True  # normalize_by_batch

  @nn.compact
  def __call__(self, x):
    channels = (x.shape[-1],)
    stats_dtype = jnp.float32 if self.force_float32_reductions else self.param_dtype
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, stats_dtype)
    ra_var = self.variable("batch_stats", "var", jnp.ones, channels, stats_dtype)
    scale = self.param("scale", nn.initializers.ones, channels, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, channels, self.param_dtype)
    dtype = self.dtype or jnp.result_type(x)
    compute_dtype = jnp.promote_types(dtype, jnp.float32) if self.force_float32_reductions \
        else jnp.promote_types(dtype, self.param_dtype)
    if self.use_running_average:
      inv_std = lax.rsqrt(ra_var.value.astype(compute_dtype) + self.epsilon)
      y = (x.astype(compute_dtype) - ra_mean.value.astype(compute_dtype)) * (inv_std * scale) \
          + bias
      return y.astype(dtype)
    y, mean, var = normalize_by_batch(x, scale, bias, self.epsilon, compute_dtype,
                                      self.product_gradient)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(dtype)
