"""Convolutions by oneDNN on XLA:CPU, the kernels TensorFlow's CPU builds use.

XLA:CPU's own convolutions (Eigen) take 1.15-2.1x oneDNN's time at this project's shapes,
forward and both gradients (benchmarks/onednn.py); its kernel gradients transpose their
operands first. Where the project's CPU kernels run (native.py: one CPU device, not written
out), `conv_general_dilated` (nn.Conv's `conv_general_dilated`) hands 2-D convolutions in
float32 or bfloat16 to oneDNN through an XLA FFI custom call (onednn_conv.cc), with their
gradients by oneDNN too; anything else (dilations, other dtypes, other platforms, several
devices, exports) is `lax.conv_general_dilated`.
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bloodcell_jax.models import native

_TARGET = "bloodcell_jax_onednn_conv"
_NHWC = ("NHWC", "HWIO", "NHWC")
_KINDS = {"forward": 0, "input_gradient": 1, "kernel_gradient": 2}


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, by oneDNN where it can (module docstring)."""
  xla = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  plain = (lhs.ndim == 4 and rhs.ndim == 4 and batch_group_count == 1
           and preferred_element_type is None and lhs.dtype == rhs.dtype
           and lhs.dtype in (jnp.float32, jnp.bfloat16)
           and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           and is_nhwc(lhs.shape, rhs.shape, dimension_numbers))
  if not (plain and native.in_use()):
    return xla()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple((int(low), int(high)) for low, high in padding)
  if any(p < 0 for pair in padding for p in pair):
    return xla()
  return conv(lhs, rhs, tuple(int(s) for s in window_strides), padding, feature_group_count)


def is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  """Whether `dimension_numbers` are NHWC images, HWIO kernels, NHWC outputs."""
  if dimension_numbers is None:
    return False
  wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == wanted


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x, kernel, strides: Tuple[int, int], padding: Tuple[Tuple[int, int], ...],
         groups: int = 1):
  """A convolution of NHWC `x` with an HWIO `kernel` by oneDNN (`native.library()` set up),
  explicit `padding` ((top, bottom), (left, right)); `groups` as lax's feature_group_count."""
  return _call("forward", x, kernel, _output_shape(x.shape, kernel.shape, strides, padding),
               x.dtype, strides, padding, groups)


def _conv_forward(x, kernel, strides, padding, groups):
  return conv(x, kernel, strides, padding, groups), (x, kernel)


def _conv_backward(strides, padding, groups, residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  # XLA drops the input gradient where nothing needs it (a network's first layer).
  return (_call("input_gradient", g, kernel, x.shape, x.dtype, strides, padding, groups),
          _call("kernel_gradient", x, g, kernel.shape, kernel.dtype, strides, padding, groups))


conv.defvjp(_conv_forward, _conv_backward)


def _output_shape(x_shape, kernel_shape, strides, padding):
  spatial = [(size + low + high - k) // s + 1 for size, k, s, (low, high)
             in zip(x_shape[1:3], kernel_shape[:2], strides, padding)]
  return (x_shape[0], *spatial, kernel_shape[3])


def _call(kind, a, b, shape, dtype, strides, padding, groups):
  (top, bottom), (left, right) = padding
  attributes = dict(kind=_KINDS[kind], stride_h=strides[0], stride_w=strides[1], pad_top=top,
                    pad_left=left, pad_bottom=bottom, pad_right=right, groups=groups)
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(shape, dtype),
                          vmap_method="sequential")
  return call(a, b, **{name: np.int64(value) for name, value in attributes.items()})
