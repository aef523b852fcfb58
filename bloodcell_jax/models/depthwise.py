"""Depthwise 2-D convolution ("SAME" padding, no bias) that is fast on XLA:CPU.

XLA:CPU runs grouped convolutions (`feature_group_count` equal to the number
of channels) through a generic loop that is about 100x slower than
TensorFlow's depthwise kernels, forward and backward (jax-ml/jax#23713,
jax-ml/jax#13800). On CPU this module computes the same convolution with
elementwise fusions, channels as the vectorised minor dimension, and a
hand-written VJP:

* output: the k*k taps are slices of the input, multiplied by the kernel and
  summed in one fused loop. For stride 1 the slices come from one zero-padded
  copy of x (padding inside the fusion makes every tap a masked load, 2x
  slower); for stride 2 each tap's strided slice is padded inside the fusion,
  which is cheaper than a copy there.
* input gradient: one copy of the output gradient, spread out by the stride
  and padded, whose taps with the kernel flipped are summed like the forward's.
* kernel gradient: output positions are cut into blocks of at most 6x6. One
  fused loop adds up, per block position, the k x k input window times the
  output gradient, leaving an (N, blocks, k, k, C) array that a plain
  reduction sums. A reduction over the batch or the image inside the fusion
  makes XLA:CPU emit a scalar loop, 10x slower.

Where oneDNN's convolutions run (onednn.py: one CPU device, float32 or bfloat16), they run
this one too: alone about as fast as the path above (0.8-1.25x its time), but EfficientNetV2-S's
train step ran 26% faster with them (27.7 to 34.9 images/s, one run each) and MobileNetV3's
BatchNorm gradients can then be products (mobilenet_v3.py).

Other platforms (GPU, TPU) use `lax.conv_general_dilated`, which is fast there,
and so does every platform inside `portable.standard_ops()` (for export).
Reverse-mode autodiff (grad, vjp) is supported, forward-mode (jvp) is not.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from bloodcell_jax.models import native, onednn, portable

_BLOCK = 6


def depthwise_conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """Depthwise convolution with TensorFlow "SAME" padding.

  Args:
    x: (N, H, W, C) input.
    kernel: (k, k, C) kernel, one k x k filter per channel.
    stride: the same stride for both spatial dimensions.

  Returns:
    (N, ceil(H / stride), ceil(W / stride), C) output, in x's dtype. Equals
    `lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=C)`.
  """
  if x.ndim != 4 or kernel.ndim != 3 or kernel.shape[0] != kernel.shape[1] \
      or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"depthwise_conv2d: need x (N, H, W, C) and kernel (k, k, C), "
                     f"got {x.shape} and {kernel.shape}")
  if x.dtype in (jnp.float32, jnp.bfloat16) and native.in_use():
    return onednn.conv_general_dilated(
        x, kernel[:, :, None, :].astype(x.dtype), (stride, stride), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
  return _depthwise(x, kernel, int(stride))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x, kernel, stride):
  return _depthwise_fwd(x, kernel, stride)[0]


def _depthwise_fwd(x, kernel, stride):
  if portable.enabled():
    return _lax_forward(x, kernel, stride), (x, kernel)
  y = lax.platform_dependent(x, kernel, cpu=functools.partial(_cpu_forward, stride=stride),
                             default=functools.partial(_lax_forward, stride=stride))
  return y, (x, kernel)


def _depthwise_bwd(stride, residuals, g):
  x, kernel = residuals
  return lax.platform_dependent(x, kernel, g, cpu=functools.partial(_cpu_backward, stride=stride),
                                default=functools.partial(_lax_backward, stride=stride))


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _lax_forward(x, kernel, stride):
  return lax.conv_general_dilated(x, kernel[:, :, None, :].astype(x.dtype), (stride, stride),
                                  "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1])


def _lax_backward(x, kernel, g, stride):
  _, vjp = jax.vjp(functools.partial(_lax_forward, stride=stride), x, kernel)
  return vjp(g)


def _wide(dtype):
  """Sums in float32 at least (bfloat16 inputs), float64 for float64 models."""
  return jnp.promote_types(dtype, jnp.float32)


def _cpu_forward(x, kernel, stride):
  v, kernel = x.astype(_wide(x.dtype)), kernel.astype(_wide(x.dtype))
  if stride == 1:
    out = _taps_of_padded(_padded_input(v, kernel.shape[0], 1), kernel, v.shape[1:3])
  else:
    out = _strided_taps(v, kernel, stride)
  return out.astype(x.dtype)


def _taps_of_padded(padded, kernel, out_hw):
  """Stride-1 correlation of an already padded array with `kernel`, over `out_hw` outputs."""
  k = kernel.shape[0]
  n, c = padded.shape[0], padded.shape[-1]
  return _tree_sum([lax.slice(padded, (0, i, j, 0), (n, i + out_hw[0], j + out_hw[1], c))
                    * kernel[i, j] for i in range(k) for j in range(k)])


def _cpu_backward(x, kernel, g, stride):
  g = g.astype(_wide(g.dtype))
  dx = _input_grad(g, kernel.astype(g.dtype), stride, x.shape[1:3])
  dk = _kernel_grad(x.astype(g.dtype), g, kernel.shape[0], stride)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


def _input_grad(g, kernel, stride, in_hw):
  """The transpose of the strided "SAME" convolution: g spread out with stride - 1 zeros
  between its values and padded, in one copy, then a stride-1 correlation with the kernel
  flipped. XLA:CPU computes that copy once; as padded slices, each tap would recompute
  whatever produced g (a BatchNorm's and an activation's gradients)."""
  k = kernel.shape[0]
  config = [(0, 0, 0)]
  for size, out_size in zip(in_hw, g.shape[1:3]):
    low = k - 1 - _same_pad_before(size, k, stride)
    high = size + k - 1 - low - ((out_size - 1) * stride + 1)
    config.append((low, high, stride - 1))
  spread = lax.pad(g, jnp.zeros((), g.dtype), config + [(0, 0, 0)])
  return _taps_of_padded(spread, kernel[::-1, ::-1], in_hw)


def _same_pad_before(size, k, stride):
  total = max((-(-size // stride) - 1) * stride + k - size, 0)
  return total // 2


def _blocks(out_size, k, stride):
  """(block size, block count) for one spatial dimension of the output."""
  count = -(-out_size // _BLOCK)
  block = max(-(-out_size // count), -(-k // stride))
  return block, -(-out_size // block)


def _block_rows(out_size, k, stride):
  """Padded-input rows one kernel-gradient term reads: k for one block, else whole blocks."""
  block, count = _blocks(out_size, k, stride)
  return k if count == 1 else count * block * stride


def _padded_input(x, k, stride):
  """x with "SAME" zero padding before and enough zeros after for the forward taps and the
  kernel-gradient blocks: one copy in memory that both read without masks."""
  pads = [(0, 0)]
  for size in x.shape[1:3]:
    out_size = -(-size // stride)
    before = _same_pad_before(size, k, stride)
    block_reads = (_blocks(out_size, k, stride)[0] - 1) * stride + _block_rows(out_size, k, stride)
    total = max((out_size - 1) * stride + k, block_reads)
    pads.append((before, total - size - before))
  return jnp.pad(x, pads + [(0, 0)])


def _tap_range(size, out_size, offset, stride):
  """Outputs [lo, hi) whose input position o * stride + offset is inside [0, size)."""
  lo = -(offset // stride) if offset < 0 else 0
  hi = min((size - 1 - offset) // stride + 1, out_size)
  return lo, hi


def _strided_taps(x, kernel, stride):
  """The strided forward: sum over taps (i, j) of kernel[i, j] times x's strided slice for that
  tap, each padded to the output's size, so that the border handling happens inside the one
  fused loop."""
  k = kernel.shape[0]
  in_hw = x.shape[1:3]
  out_size = tuple(-(-n // stride) for n in in_hw)
  pads = tuple(_same_pad_before(n, k, stride) for n in in_hw)
  terms = []
  for i in range(k):
    for j in range(k):
      ranges = [_tap_range(in_hw[d], out_size[d], (i, j)[d] - pads[d], stride) for d in (0, 1)]
      if any(hi <= lo for lo, hi in ranges):
        continue
      starts = [lo * stride + (i, j)[d] - pads[d] for d, (lo, _) in enumerate(ranges)]
      window = x[:, starts[0]:starts[0] + (ranges[0][1] - ranges[0][0] - 1) * stride + 1:stride,
                 starts[1]:starts[1] + (ranges[1][1] - ranges[1][0] - 1) * stride + 1:stride]
      config = [(lo, out_size[d] - hi, 0) for d, (lo, hi) in enumerate(ranges)]
      term = window * kernel[i, j]
      terms.append(lax.pad(term, jnp.zeros((), term.dtype), [(0, 0, 0), *config, (0, 0, 0)]))
  return _tree_sum(terms)


def _kernel_grad(x, g, k, stride):
  """dk[i, j, c] = sum over n, h, w of x_padded[n, h*s + i, w*s + j, c] * g[n, h, w, c].

  Term (a, b) multiplies output position (a, b) of every block by the block's
  k x k input window; the windows of all blocks come from one slice of the
  padded input (for stride > 1, x padded inside the fusion) reshaped to
  (blocks, block * stride) and cut to k.
  """
  n, out_h, out_w, c = g.shape
  (bh, nbh), (bw, nbw) = (_blocks(size, k, stride) for size in (out_h, out_w))
  g = jnp.pad(g, ((0, 0), (0, nbh * bh - out_h), (0, nbw * bw - out_w), (0, 0)))
  g = g.reshape(n, nbh, bh, nbw, bw, c)
  rows, cols = _block_rows(out_h, k, stride), _block_rows(out_w, k, stride)
  padded = _padded_input(x, k, stride) if stride == 1 else None
  pad_h, pad_w = (_same_pad_before(size, k, stride) for size in x.shape[1:3])
  terms = []
  for a in range(bh):
    for b in range(bw):
      if padded is not None:
        window = lax.slice(padded, (0, a, b, 0), (n, a + rows, b + cols, c))
      else:
        low_h, low_w = pad_h - a * stride, pad_w - b * stride
        window = lax.pad(x, jnp.zeros((), x.dtype), [
            (0, 0, 0), (low_h, rows - x.shape[1] - low_h, 0),
            (low_w, cols - x.shape[2] - low_w, 0), (0, 0, 0)])
      window = window.reshape(n, nbh, rows // nbh, nbw, cols // nbw, c)[:, :, :k, :, :k]
      terms.append(window * g[:, :, a, None, :, b, None])
  partial_sums = lax.optimization_barrier(_tree_sum(terms))
  return jnp.sum(partial_sums, axis=(0, 1, 3))


def _tree_sum(terms):
  while len(terms) > 1:
    terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
             for i in range(0, len(terms), 2)]
  return terms[0]
