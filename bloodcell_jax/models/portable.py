"""Models traced with the ops that every export runtime has (TensorFlow, LiteRT, ONNX Runtime).

Inside `standard_ops()`:
* depthwise convolutions are one `lax.conv_general_dilated` on every platform, not the
  XLA:CPU path of slices, pads and gathers (bloodcell_jax/models/depthwise.py), which
  LiteRT cannot convert and which would be slow there;
* a Dense layer on a feature map (ConvNeXt's pointwise layers) is a 1x1 convolution: the
  reshape LiteRT makes of it with a dynamic batch is mistranslated by tf2onnx;
* the exact GELU's erf is a polynomial of plain ops (Abramowitz & Stegun 7.1.26, error below
  1.5e-7): JAX writes erf as a StableHLO composite that TensorFlow's converter cannot read,
  and its erfc polynomial has a select that tf2onnx turns into arithmetic where inf * 0 = NaN.
Each is the same function up to float rounding; training never runs inside.
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_enabled = False


def enabled() -> bool:
  return _enabled


@contextlib.contextmanager
def standard_ops():
  global _enabled
  previous, _enabled = _enabled, True
  try:
    with nn.intercept_methods(_dense_on_feature_map_as_conv):
      yield
  finally:
    _enabled = previous


def gelu(x):
  """The exact GELU, x * P(X <= x) for a standard normal X."""
  if _enabled:
    return 0.5 * x * (1.0 + _erf_polynomial(x * (2.0 ** -0.5)))
  return jax.nn.gelu(x, approximate=False)


_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf_polynomial(x):
  t = 1.0 / (1.0 + _ERF_P * jnp.abs(x))
  poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
  return jnp.sign(x) * (1.0 - poly * jnp.exp(-x * x))


def _dense_on_feature_map_as_conv(next_fun, args, kwargs, context):
  module = context.module
  if not (isinstance(module, nn.Dense) and context.method_name == "__call__"
          and args and args[0].ndim == 4):
    return next_fun(*args, **kwargs)
  x = args[0]
  dtype = module.dtype or jnp.result_type(x, module.param_dtype)
  kernel = module.get_variable("params", "kernel").astype(dtype)
  y = lax.conv_general_dilated(x.astype(dtype), kernel[None, None], (1, 1), "VALID",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"),
                               precision=module.precision)
  if module.use_bias:
    y = y + module.get_variable("params", "bias").astype(dtype)
  return y
