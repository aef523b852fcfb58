"""2x2 max pooling, alone and fused with the convolution before it.

`max_pool_2x2` pools any map. `conv_max_pool` is a stride-1 "SAME" convolution followed by that
pooling (each block of the custom CNN). On CPU it runs in one of three ways (`cpu_method`):

* "taps", for an input with few channels (the first block: RGB in, 32 maps out), when no
  gradient is needed. With 3 input channels a 3x3 convolution has 27 products per output, too
  few for XLA:CPU's convolution to be anything but memory-bound, and the full-resolution map it
  writes is read again by the pooling that quarters it. Here it is one fused loop instead: for
  each of the four positions of a pooling window, the k*k*C taps (strided slices of the padded
  input) times the kernel, summed; the largest of the four is kept, and the full-resolution map
  never reaches memory. At batch 256 and 96x96 that is 3x faster than the convolution and the
  pooling (30 against 95-110 ms, 2 CPU cores). A gradient written for it (each output gradient
  routed to its window's maximum, then XLA's convolution gradients) was no faster than the
  unfused pair's, so training runs the pair there; JAX differentiates the loop where a
  gradient of an inference pass is taken.
* "winograd_f4" and "winograd_f2": `winograd.conv_max_pool`, fewer products for convolutions
  that run at the CPU's peak. Where the project's CPU kernels run (models/native.py), F(4x4)
  for a 3x3 kernel on 32 or more input channels, in training and inference. Elsewhere, with
  XLA's fusions for its transforms, F(4x4) in inference (32 or more) and F(2x2) in training
  (64 or more): the forward pass gains most from the larger blocks, the gradient from the
  smaller ones.
* "unfused": the convolution (oneDNN's where the CPU kernels run, models/onednn.py; else
  XLA's), then `max_pool_2x2`.

Other platforms, and `portable.standard_ops()` (export), run the convolution and then
`max_pool_2x2`. All pool VALID: an odd last row or column is dropped, as in Keras.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bloodcell_jax.models import native, onednn, portable, winograd


def _windows_2x2(x):
  b, h, w, c = x.shape
  return x[:, : h - h % 2, : w - w % 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pooling, stride 2, VALID (an odd last row/column is dropped, as in Keras).

  Forward is a reshape + max. The gradient is one fused pass that routes each
  output gradient to the input positions equal to the window's maximum: on CPU
  that is 3x faster than XLA's derivative of the same max and 7x faster than
  `reduce_window`'s select-and-scatter. Exact ties (rare for real-valued inputs,
  which is why models pool before the ReLU) all receive the gradient.
  """
  return _windows_2x2(x).max(axis=(2, 4))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, g):
  x, y = residuals
  at_max = _windows_2x2(x) == y[:, :, None, :, None, :]
  dx = jnp.where(at_max, g[:, :, None, :, None, :], 0).astype(x.dtype)
  b, h, w, c = x.shape
  dx = dx.reshape(b, h - h % 2, w - w % 2, c)
  if dx.shape != x.shape:
    dx = jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return (dx,)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


# Input channels * taps up to which the fused loop beats XLA:CPU's convolution (27 for RGB).
MAX_FUSED_PRODUCTS = 27
# Input channels from which Winograd's fewer products outweigh its transforms' memory traffic
# (benchmarks/winograd.py): forward and gradients, F(2x2), 0.6-0.8x the time at 64 and 128
# channels, level at 32; forward alone, F(4x4), 0.5-0.65x at 64 and 128, 0.96x at 32.
MIN_WINOGRAD_CHANNELS = {"train": 64, "inference": 32}
# The same with the transforms in C++ (native.py), against oneDNN's convolutions: F(4x4),
# forward and gradients at batch 64, takes 0.6-0.7x oneDNN's time at 32, 64 and 128 channels
# (1.4x with 3); forward alone at batch 128, 0.5-0.9x.
MIN_NATIVE_WINOGRAD_CHANNELS = 32


def cpu_method(shape, kernel_size: int, train: bool) -> str:
  """How conv_max_pool runs on CPU for an input of `shape` (N, H, W, C_in): "taps",
  "winograd_f2", "winograd_f4" or "unfused" (module docstring)."""
  in_channels = shape[3]
  if not train and in_channels * kernel_size * kernel_size <= MAX_FUSED_PRODUCTS:
    return "taps"
  if kernel_size != 3 or min(shape[1:3]) < 2:
    return "unfused"
  if native.in_use():
    return "winograd_f4" if in_channels >= MIN_NATIVE_WINOGRAD_CHANNELS else "unfused"
  if in_channels >= MIN_WINOGRAD_CHANNELS["train" if train else "inference"]:
    return "winograd_f2" if train else "winograd_f4"
  return "unfused"


def conv_max_pool(x: jnp.ndarray, kernel: jnp.ndarray, train: bool = False) -> jnp.ndarray:
  """max_pool_2x2(conv(x, kernel)) for a stride-1 "SAME" convolution with an odd square
  kernel (k, k, C_in, C_out) and x (N, H, W, C_in); (N, H // 2, W // 2, C_out). `train`: a
  gradient will be taken (the fused taps are left out, their gradient being slow)."""
  k = kernel.shape[0]
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[1] != k or k % 2 == 0 \
      or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"conv_max_pool: need x (N, H, W, C) and an odd square kernel (k, k, C, "
                     f"F), got {x.shape} and {kernel.shape}")
  method = _CPU_METHODS[cpu_method(x.shape, k, train)]
  if portable.enabled() or method is _unfused:
    return _unfused(x, kernel)
  return lax.platform_dependent(x, kernel, cpu=method, default=_unfused)


def _unfused(x, kernel):
  return max_pool_2x2(onednn.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC")))


def _phases(x, kernel):
  """The convolution at the four positions (a, b) of every 2x2 pooling window, in the order
  (0, 0), (0, 1), (1, 0), (1, 1): each a fused sum of k*k*C shifted, strided slices. (lax
  slices and one split of the kernel: jnp indexing made tracing the CNN 2x slower.)"""
  k, channels = kernel.shape[0], x.shape[3]
  n, h, w = x.shape[0], x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  padded = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  weights = [row.reshape(-1) for row in jnp.split(kernel.reshape(k * k * channels, -1),
                                                   k * k * channels)]
  phases = []
  for a in (0, 1):
    for b in (0, 1):
      terms = [lax.slice(padded, (0, a + i, b + j, c), (n, a + i + h - 1, b + j + w - 1, c + 1),
                         (1, 2, 2, 1)) * weights[(i * k + j) * channels + c]
               for i in range(k) for j in range(k) for c in range(channels)]
      phases.append(functools.reduce(jnp.add, terms))
  return phases


def _in_float32(method):
  """`method` computed in float32 at least, its result in x's dtype."""
  def wide(x, kernel):
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    return method(x.astype(dtype), kernel.astype(dtype)).astype(x.dtype)
  return wide


def _taps(x, kernel):
  return functools.reduce(jnp.maximum, _phases(x, kernel))


_CPU_METHODS = {
    "taps": _in_float32(_taps),
    "winograd_f2": _in_float32(functools.partial(winograd.conv_max_pool, block=2)),
    "winograd_f4": _in_float32(functools.partial(winograd.conv_max_pool, block=4)),
    "unfused": _unfused,
}


class ConvMaxPool(nn.Module):
  """nn.Conv (stride 1, "SAME", optional bias) followed by `max_pool_2x2`, with nn.Conv's
  parameters (`kernel` (k, k, C_in, F), `bias` (F,)), computed by `conv_max_pool`; `train`
  when a gradient will be taken."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.is_initializing():  # only the shapes count: the unfused pair traces fastest
      y = _unfused(x, kernel)
    else:
      y = conv_max_pool(x, kernel, train)
    if self.use_bias:  # after the pooling: max(a + b, c + b) = max(a, c) + b
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y
