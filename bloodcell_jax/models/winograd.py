"""A 3x3 stride-1 "SAME" convolution, alone or followed by 2x2 max pooling, by Winograd's
minimal filtering algorithms F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016).

F(m x m, 3x3) computes each m x m block of a 3x3 convolution's output from the (m+2) x (m+2)
block of input around it with (m+2)^2 products per channel pair instead of 9 m^2 (16 instead
of 36 for m = 2, 36 instead of 144 for m = 4): the input tiles and the kernel go through fixed
linear transforms (B^T d B and G g G^T), (m+2)^2 batched matrix products (tiles x C_in times
C_in x C_out) replace the convolution, and an output transform (A^T m A) gives the block's
outputs. For the custom CNN the blocks hold whole 2x2 pooling windows, so the output transform
keeps the largest of each window's four and the full-resolution map is never written.

On a CPU these convolutions run at its peak FLOP rate, so fewer products is what makes them
faster. Where the project's CPU kernels run (native.py: one CPU device), the data transforms
are C++ (winograd_transforms.cc), each one pass over memory, and F(4x4) takes 0.45-0.75x the
time of oneDNN's convolution, forward and both gradients, from 32 channels in and 64 out
(benchmarks/winograd.py, benchmarks/onednn.py, 2 CPU cores): the CNN's blocks
(`conv_max_pool`) and every model's wide 3x3 convolutions (`conv_general_dilated`, nn.Conv's).
Elsewhere the transforms are XLA's fusions, which take several passes:

* forward alone (evaluation, predict), batch 128: F(4x4) takes 0.5-0.65x the time of XLA's
  convolution and the pooling with 64 and 128 input channels, 0.96x with 32;
* forward and both gradients (training), batch 64: F(2x2) takes 0.6-0.8x with 64 and 128
  input channels. F(4x4)'s larger transforms make its gradient slower than XLA's; its larger
  program also compiles slower (the CNN's forward pass at batch 128: 2.5 s, against 0.7 s with
  F(2x2) and 0.2 s with XLA's convolution).

The gradient is written out (JAX's derivative of the same code ran 2-4x slower than XLA's
convolution): the output gradient goes to each window's maximum, back through the output
transform, then to the kernel as products of the saved input tiles, and to the input as
products with the transformed kernel, whose tiles overlap by two rows and columns.

The results equal the convolution's within float32 rounding: relative differences of about
1e-7 for F(2x2) and 1e-6 for F(4x4), whose transforms multiply by up to 8. Computed in
float32 at least.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bloodcell_jax.models import native, onednn


class _Algorithm(NamedTuple):
  input: np.ndarray  # B^T, (m + 2) x (m + 2)
  kernel: np.ndarray  # G, (m + 2) x 3
  output: np.ndarray  # A^T, m x (m + 2)


F2 = _Algorithm(  # F(2x2, 3x3) on the points 0, 1, -1
    input=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32),
    kernel=np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32),
    output=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32))
F4 = _Algorithm(  # F(4x4, 3x3) on the points 0, 1, -1, 2, -2
    input=np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                   np.float32),
    kernel=np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32),
    output=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float32))


def _combination(coefficients, parts):
  """sum_i coefficients[i] * parts[i], leaving out zeros and multiplications by 1 or -1 (lax
  operations: they trace faster than jnp's operators, and predict traces the model each run)."""
  total = None
  for coefficient, part in zip(coefficients, parts):
    if coefficient == 0:
      continue
    if coefficient not in (1, -1):
      part, coefficient = part * coefficient, 1
    if total is None:
      total = part if coefficient == 1 else lax.neg(part)
    else:
      total = lax.add(total, part) if coefficient == 1 else lax.sub(total, part)
  return total


def _both_sides(matrix, grid):
  """[[sum_ab matrix[u, a] matrix[v, b] grid[a][b] for v] for u]: matrix . grid . matrix^T
  for a grid of arrays, as sums of the arrays."""
  rows = [[_combination(matrix[u], [grid[a][b] for a in range(len(grid))])
           for b in range(len(grid[0]))] for u in range(matrix.shape[0])]
  return [[_combination(matrix[v], rows[u]) for v in range(matrix.shape[0])]
          for u in range(matrix.shape[0])]


def _flat(grid):
  """A square grid of (N, T, S, C) arrays as one (cells, N*T*S, C) array."""
  parts = [part for row in grid for part in row]
  return jnp.stack(parts).reshape(len(parts), -1, parts[0].shape[-1])


def _grid(flat, shape):
  """(cells, rows, C) back to a square grid of arrays of `shape`."""
  size = int(round(flat.shape[0] ** 0.5))
  parts = flat.reshape((size, size) + shape)
  return [[parts[u, v] for v in range(size)] for u in range(size)]


def _batched(a, b, contract_a: int, contract_b: int):
  """The products a[u] . b[u] of every cell u, contracting the named axes."""
  return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))))


def _tile_counts(algorithm, h: int, w: int):
  m = algorithm.output.shape[0]
  return -(-h // m), -(-w // m)


def _padded(algorithm, x):
  """x padded by one (SAME) and below and right to whole blocks: (N, m*T + 2, m*S + 2, C)."""
  m = algorithm.output.shape[0]
  t, s = _tile_counts(algorithm, *x.shape[1:3])
  return jnp.pad(x, ((0, 0), (1, m * t + 1 - x.shape[1]), (1, m * s + 1 - x.shape[2]), (0, 0)))


def _input_tiles(algorithm, x):
  """The transformed input tiles around every m x m output block: (cells, N*T*S, C)."""
  m, size = algorithm.output.shape
  n, h, w, c = x.shape
  t, s = _tile_counts(algorithm, h, w)
  padded = _padded(algorithm, x)
  tiles = [[lax.slice(padded, (0, a, b, 0), (n, a + m * (t - 1) + 1, b + m * (s - 1) + 1, c),
                      (1, m, m, 1)) for b in range(size)] for a in range(size)]
  return _flat(_both_sides(algorithm.input, tiles))


def _kernel_tiles(algorithm, kernel):
  """G g G^T of every (input, output) channel pair: (cells, C_in, C_out)."""
  g = algorithm.kernel
  return jnp.einsum("ua,abio,vb->uvio", g, kernel, g).reshape(-1, *kernel.shape[2:])


def _kernel_gradient(algorithm, tiles, products):
  """The kernel's gradient (3, 3, C_in, C_out) from the saved input tiles (cells, P, C_in) and
  the products' gradient (cells, P, C_out): G^T (tiles^T . products) G for every cell."""
  size = algorithm.kernel.shape[0]
  return jnp.einsum("ua,uvio,vb->abio", algorithm.kernel,
                    _batched(tiles, products, 1, 1).reshape(size, size, tiles.shape[2], -1),
                    algorithm.kernel)


def _windows(algorithm, x, kernel):
  """The four convolution outputs of every 2x2 pooling window, grouped by the window's place
  in its block: {(p, q): [(0, 0), (0, 1), (1, 0), (1, 1) outputs]}, each (N, T, S, C_out);
  and the input tiles and kernel tiles."""
  m = algorithm.output.shape[0]
  n, h, w, _ = x.shape
  t, s = _tile_counts(algorithm, h, w)
  tiles, kernel_tiles = _input_tiles(algorithm, x), _kernel_tiles(algorithm, kernel)
  products = _grid(_batched(tiles, kernel_tiles, 2, 1), (n, t, s, kernel.shape[-1]))
  out = _both_sides(algorithm.output, products)
  windows = {(p, q): [out[2 * p][2 * q], out[2 * p][2 * q + 1], out[2 * p + 1][2 * q],
                      out[2 * p + 1][2 * q + 1]] for p in range(m // 2) for q in range(m // 2)}
  return windows, tiles, kernel_tiles


def _interleaved(pooled, h: int, w: int):
  """{(p, q): (N, T, S, C)} pooled values of each window place -> (N, H // 2, W // 2, C)."""
  half = int(round(len(pooled) ** 0.5))
  n, t, s, c = pooled[0, 0].shape
  if half == 1:
    return pooled[0, 0][:, :h // 2, :w // 2]
  rows = jnp.stack([jnp.stack([pooled[p, q] for q in range(half)], axis=3)
                    for p in range(half)], axis=2)  # (N, T, half, S, half, C)
  return rows.reshape(n, t * half, s * half, c)[:, :h // 2, :w // 2]


def _by_window(g, half: int, t: int, s: int):
  """The inverse of _interleaved: (N, H // 2, W // 2, C) -> {(p, q): (N, T, S, C)}."""
  n, rows, cols, c = g.shape
  if half == 1 and (rows, cols) == (t, s):
    return {(0, 0): g}
  g = jnp.pad(g, ((0, 0), (0, t * half - rows), (0, s * half - cols), (0, 0)))
  g = g.reshape(n, t, half, s, half, c)
  return {(p, q): g[:, :, p, :, q] for p in range(half) for q in range(half)}


def _check(x, kernel):
  if x.ndim != 4 or kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[3] \
      or min(x.shape[1:3]) < 2:
    raise ValueError(f"winograd.conv_max_pool: need x (N, H, W, C) with H, W >= 2 and a (3, 3, "
                     f"C, F) kernel, got {x.shape} and {kernel.shape}")


def _conv_max_pool(algorithm):
  """max_pool_2x2(conv(x, kernel)) by `algorithm`, with its gradient."""

  def pooled(x, kernel):
    windows, tiles, kernel_tiles = _windows(algorithm, x, kernel)
    return {place: functools.reduce(jnp.maximum, outputs)
            for place, outputs in windows.items()}, windows, tiles, kernel_tiles

  @jax.custom_vjp
  def conv_max_pool(x, kernel):
    _check(x, kernel)
    return _interleaved(pooled(x, kernel)[0], *x.shape[1:3])

  def forward(x, kernel):
    _check(x, kernel)
    maxima, windows, tiles, kernel_tiles = pooled(x, kernel)
    # Which of the four is the window's maximum (the first one on a tie, as a single route).
    which = {place: jnp.select([o == maxima[place] for o in windows[place][:3]], [0, 1, 2],
                               3).astype(jnp.int8) for place in windows}
    return _interleaved(maxima, *x.shape[1:3]), (tiles, kernel_tiles, which, x.shape)

  def backward(residuals, g):
    tiles, kernel_tiles, which, (n, h, w, channels) = residuals
    m, size = algorithm.output.shape
    t, s = _tile_counts(algorithm, h, w)
    g = _by_window(g, m // 2, t, s)
    block = [[None] * m for _ in range(m)]
    for (p, q), routes in which.items():
      for i in range(2):
        for j in range(2):
          block[2 * p + i][2 * q + j] = jnp.where(routes == 2 * i + j, g[p, q], 0)
    products = _flat(_both_sides(algorithm.output.T, block))  # (cells, N*T*S, C_out)
    kernel_grad = _kernel_gradient(algorithm, tiles, products)
    tile_grad = _both_sides(algorithm.input.T,
                            _grid(_batched(products, kernel_tiles, 2, 2), (n, t, s, channels)))
    return _overlapped(tile_grad, m, h, w), kernel_grad

  conv_max_pool.defvjp(forward, backward)
  return conv_max_pool


def _overlapped(tile_grad, m: int, h: int, w: int):
  """The input's gradient from its tiles' gradients: tiles of m + 2 rows start every m rows
  (and columns) of the padded input, so its row m*t + r sums the tile rows r of tile t and,
  for r < 2, r + m of tile t - 1. Each residue (r, q) is one plane, the planes interleaved."""
  n, t, s, channels = tile_grad[0][0].shape
  zero = jnp.zeros((), tile_grad[0][0].dtype)
  shifted = lambda part, down, right: lax.pad(
      part, zero, ((0, 0, 0), (down, 1 - down, 0), (right, 1 - right, 0), (0, 0, 0)))
  size = len(tile_grad)

  def plane(r, q):
    parts = [(r + dr, q + dq, dr > 0, dq > 0) for dr in (0, m) for dq in (0, m)
             if r + dr < size and q + dq < size]
    return functools.reduce(lax.add, [shifted(tile_grad[a][b], down, right)
                                      for a, b, down, right in parts])

  padded = jnp.stack([jnp.stack([plane(r, q) for q in range(m)], axis=3) for r in range(m)],
                     axis=2).reshape(n, m * (t + 1), m * (s + 1), channels)
  return padded[:, 1:h + 1, 1:w + 1, :]


def _native(transform, shape, *args, block, routes=False):
  """A transform of winograd_transforms.cc: a float32 result of `shape` (`routes`: and the
  int8 route of each window's maximum, of the same shape)."""
  result = jax.ShapeDtypeStruct(shape, jnp.float32)
  results = (result, jax.ShapeDtypeStruct(shape, jnp.int8)) if routes else result
  call = jax.ffi.ffi_call(f"bloodcell_jax_winograd_{transform}", results,
                          vmap_method="sequential")
  return call(*args, block=np.int64(block))


def _native_products(algorithm, x, kernel):
  """(tiles, kernel tiles, their products) of x's tiles by the C++ input transform."""
  _check(x, kernel)
  n, h, w, channels = x.shape
  t, s = _tile_counts(algorithm, h, w)
  cells = algorithm.input.shape[0] ** 2
  tiles = _native("input", (cells, n * t * s, channels), _padded(algorithm, x),
                  block=algorithm.output.shape[0])
  kernel_tiles = _kernel_tiles(algorithm, kernel)
  return tiles, kernel_tiles, _batched(tiles, kernel_tiles, 2, 1)


def _native_gradients(algorithm, tiles, kernel_tiles, products, x_shape):
  """x's and the kernel's gradients from the products' gradient (cells, P, C_out)."""
  m = algorithm.output.shape[0]
  n, h, w, channels = x_shape
  t, s = _tile_counts(algorithm, h, w)
  padded = _native("input_grad", (n, m * t + 2, m * s + 2, channels),
                   _batched(products, kernel_tiles, 2, 2), block=m)
  return padded[:, 1:h + 1, 1:w + 1], _kernel_gradient(algorithm, tiles, products)


def _native_conv_max_pool(algorithm):
  """_conv_max_pool(algorithm) with its data transforms in C++ (native.py): each is one pass
  over memory, where XLA's fusions of the same sums take several. The products stay XLA's."""
  m = algorithm.output.shape[0]

  def forward(x, kernel):
    tiles, kernel_tiles, products = _native_products(algorithm, x, kernel)
    n, h, w, _ = x.shape
    t, s = _tile_counts(algorithm, h, w)
    # Whole blocks of pooled outputs, and which of its window's four each was.
    y, which = _native("output_max", (n, m // 2 * t, m // 2 * s, kernel.shape[3]), products,
                       block=m, routes=True)
    return y[:, :h // 2, :w // 2], (tiles, kernel_tiles, which, x.shape)

  @jax.custom_vjp
  def conv_max_pool(x, kernel):
    return forward(x, kernel)[0]

  def backward(residuals, g):
    tiles, kernel_tiles, which, x_shape = residuals
    g = jnp.pad(g, ((0, 0), (0, which.shape[1] - g.shape[1]), (0, which.shape[2] - g.shape[2]),
                    (0, 0)))
    products = _native("output_max_grad", tiles.shape[:2] + g.shape[3:], g, which, block=m)
    return _native_gradients(algorithm, tiles, kernel_tiles, products, x_shape)

  conv_max_pool.defvjp(forward, backward)
  return conv_max_pool


@jax.custom_vjp
def _native_conv(x, kernel):
  """A stride-1 "SAME" 3x3 convolution by F(4x4, 3x3), its transforms in C++."""
  return _native_conv_forward(x, kernel)[0]


def _native_conv_forward(x, kernel):
  tiles, kernel_tiles, products = _native_products(F4, x, kernel)
  n, h, w, _ = x.shape
  t, s = _tile_counts(F4, h, w)
  y = _native("output", (n, 4 * t, 4 * s, kernel.shape[3]), products, block=4)
  return y[:, :h, :w], (tiles, kernel_tiles, x.shape)


def _native_conv_backward(residuals, g):
  tiles, kernel_tiles, x_shape = residuals
  _, h, w, _ = x_shape
  t, s = _tile_counts(F4, h, w)
  g = jnp.pad(g, ((0, 0), (0, 4 * t - h), (0, 4 * s - w), (0, 0)))
  products = _native("output_grad", tiles.shape[:2] + g.shape[3:], g, block=4)
  return _native_gradients(F4, tiles, kernel_tiles, products, x_shape)


_native_conv.defvjp(_native_conv_forward, _native_conv_backward)


_BY_BLOCK = {2: _conv_max_pool(F2), 4: _conv_max_pool(F4)}
_NATIVE_BY_BLOCK = {2: _native_conv_max_pool(F2), 4: _native_conv_max_pool(F4)}


def conv_max_pool(x: jnp.ndarray, kernel: jnp.ndarray, block: int = 2) -> jnp.ndarray:
  """max_pool_2x2(conv(x, kernel)) for a stride-1 "SAME" 3x3 convolution, x (N, H, W, C_in),
  kernel (3, 3, C_in, C_out); (N, H // 2, W // 2, C_out), by F(block x block, 3x3), block 2
  or 4. An odd last row or column of the convolution's output is dropped by the pooling, as in
  pooling.max_pool_2x2."""
  if native.in_use() and x.dtype == kernel.dtype == jnp.float32:
    return _NATIVE_BY_BLOCK[block](x, kernel)
  return _BY_BLOCK[block](x, kernel)


# (input, output) channels from which F(4x4) in C++ beats oneDNN's convolution, forward and
# both gradients at batch 64 (2 CPU cores): 0.55x its time for 24x24x48 -> 192, 0.7x for
# 12x12x64 -> 256, 0.85x for 24x24x32 -> 64; 2x for 48x48x24 -> 24, whose few products leave
# the transforms' memory traffic to dominate.
MIN_CONV_CHANNELS = (32, 64)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` (nn.Conv's), by F(4x4, 3x3) with its transforms in C++ for a
  3x3, stride-1, "SAME" float32 convolution of NHWC images with MIN_CONV_CHANNELS or more
  channels in and out, where the CPU kernels run; else onednn.conv_general_dilated."""
  arguments = (lhs, rhs, window_strides, padding)
  options = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                 dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                 batch_group_count=batch_group_count, precision=precision,
                 preferred_element_type=preferred_element_type)
  if (lhs.ndim == 4 and rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1)
      and feature_group_count == batch_group_count == 1 and preferred_element_type is None
      and lhs.dtype == rhs.dtype == jnp.float32
      and rhs.shape[2] >= MIN_CONV_CHANNELS[0] and rhs.shape[3] >= MIN_CONV_CHANNELS[1]
      and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
      and onednn.is_nhwc(lhs.shape, rhs.shape, dimension_numbers)
      and _pads(lhs.shape, padding) == ((1, 1), (1, 1)) and native.in_use()):
    return _native_conv(lhs, rhs)
  return onednn.conv_general_dilated(*arguments, **options)


def _pads(shape, padding):
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(shape[1:3], (3, 3), (1, 1), padding)
  return tuple((int(low), int(high)) for low, high in padding)
