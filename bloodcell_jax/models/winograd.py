"""A 3x3 stride-1 "SAME" convolution followed by 2x2 max pooling, by Winograd's F(2x2, 3x3).

The minimal filtering algorithm computes each 2x2 block of a 3x3 convolution's output from the
4x4 block of input around it with 16 products per channel pair instead of 36: the input tiles
and the kernel go through fixed linear transforms (B^T d B and G g G^T), 16 batched matrix
products (tiles x C_in times C_in x C_out) replace the convolution, and an output transform
(A^T m A) gives the four outputs of the block. A 2x2 pooling window is exactly such a block, so
the output transform keeps the largest of the four, and the full-resolution map is never
written.

On XLA:CPU the convolutions of the custom CNN run at the CPU's peak FLOP rate, so fewer
products is what makes them faster: with 64 or more input channels, forward and both gradients
at batch 64 take 0.6-0.75x the time of XLA's convolution and the pooling (benchmarks/
winograd.py). With fewer input channels the transforms' memory traffic costs more than the
products save. The gradient is written out (JAX's derivative of the same code ran 2-4x slower
than XLA's convolution): the output gradient goes to each window's maximum, back through the
output transform, then to the kernel as products of the saved input tiles and to the input as
products with the transformed kernel, whose tiles overlap by two rows and columns.

The results equal the convolution's within float32 rounding (relative differences of about
1e-6: the transforms only add, subtract and halve). Computed in float32 at least.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(2x2, 3x3) on the points 0, 1, -1 (Lavin and Gray, 2016).
_INPUT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)  # B^T
_KERNEL = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)  # G
_OUTPUT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)  # A^T


def _combination(coefficients, parts):
  """sum_i coefficients[i] * parts[i], leaving out zeros and multiplications by 1 or -1 (lax
  operations: they trace faster than jnp's operators, and predict traces the model each run)."""
  total = None
  for coefficient, part in zip(coefficients, parts):
    if coefficient == 0:
      continue
    if total is None:
      total = part if coefficient == 1 else lax.neg(part) if coefficient == -1 else \
          coefficient * part
    else:
      total = lax.add(total, part) if coefficient == 1 else lax.sub(total, part) \
          if coefficient == -1 else total + coefficient * part
  return total


def _both_sides(matrix, grid):
  """[[sum_ab matrix[u, a] matrix[v, b] grid[a][b] for v] for u]: matrix . grid . matrix^T
  for a grid of arrays, as sums of the arrays."""
  rows = [[_combination(matrix[u], [grid[a][b] for a in range(len(grid))])
           for b in range(len(grid[0]))] for u in range(matrix.shape[0])]
  return [[_combination(matrix[v], rows[u]) for v in range(matrix.shape[0])]
          for u in range(matrix.shape[0])]


def _flat16(grid, rows: int):
  """A 4x4 grid of (N, T, S, C) arrays as one (16, rows, C) array."""
  return jnp.stack([part for row in grid for part in row]).reshape(16, rows, grid[0][0].shape[-1])


def _grid(flat, shape):
  """(16, rows, C) back to a 4x4 grid of arrays of `shape`."""
  parts = flat.reshape((4, 4) + shape)
  return [[parts[u, v] for v in range(4)] for u in range(4)]


def _input_tiles(x):
  """The transformed 4x4 input tiles around every 2x2 output block: (16, N*T*S, C)."""
  n, h, w, c = x.shape
  t, s = h // 2, w // 2
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  tiles = [[lax.slice(padded, (0, a, b, 0), (n, a + 2 * t - 1, b + 2 * s - 1, c), (1, 2, 2, 1))
            for b in range(4)] for a in range(4)]
  return _flat16(_both_sides(_INPUT, tiles), n * t * s)


def _kernel_tiles(kernel):
  """G g G^T of every (input, output) channel pair: (16, C_in, C_out)."""
  return jnp.einsum("ua,abio,vb->uvio", _KERNEL, kernel, _KERNEL).reshape(16, *kernel.shape[2:])


def _batched(a, b, contract_a: int, contract_b: int):
  """The 16 products a[u] . b[u], contracting the named axes."""
  return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))))


def _block_outputs(x, kernel):
  """The convolution's four outputs of every 2x2 block, in the order (0, 0), (0, 1), (1, 0),
  (1, 1), each (N, H // 2, W // 2, C_out); and the input tiles and kernel tiles."""
  n, h, w, _ = x.shape
  tiles, kernel_tiles = _input_tiles(x), _kernel_tiles(kernel)
  products = _grid(_batched(tiles, kernel_tiles, 2, 1), (n, h // 2, w // 2, kernel.shape[-1]))
  outputs = _both_sides(_OUTPUT, products)
  return [outputs[0][0], outputs[0][1], outputs[1][0], outputs[1][1]], tiles, kernel_tiles


def _check(x, kernel):
  if x.ndim != 4 or kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[3] \
      or min(x.shape[1:3]) < 2:
    raise ValueError(f"winograd.conv_max_pool: need x (N, H, W, C) with H, W >= 2 and a (3, 3, "
                     f"C, F) kernel, got {x.shape} and {kernel.shape}")


@jax.custom_vjp
def conv_max_pool(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """max_pool_2x2(conv(x, kernel)) for a stride-1 "SAME" 3x3 convolution, x (N, H, W, C_in),
  kernel (3, 3, C_in, C_out); (N, H // 2, W // 2, C_out). An odd last row or column of the
  convolution's output is dropped by the pooling, as in pooling.max_pool_2x2."""
  _check(x, kernel)
  outputs, _, _ = _block_outputs(x, kernel)
  return functools.reduce(jnp.maximum, outputs)


def _forward(x, kernel):
  _check(x, kernel)
  outputs, tiles, kernel_tiles = _block_outputs(x, kernel)
  pooled = functools.reduce(jnp.maximum, outputs)
  # Which of the four is the maximum (the first one on a tie, as a single route).
  which = jnp.select([o == pooled for o in outputs[:3]], [0, 1, 2], 3).astype(jnp.int8)
  return pooled, (tiles, kernel_tiles, which, x.shape)


def _backward(residuals, g):
  tiles, kernel_tiles, which, (n, h, w, channels) = residuals
  t, s = h // 2, w // 2
  block = [[jnp.where(which == 2 * i + j, g, 0) for j in range(2)] for i in range(2)]
  products = _flat16(_both_sides(_OUTPUT.T, block), n * t * s)  # (16, N*T*S, C_out)
  kernel_grad = jnp.einsum("ua,uvio,vb->abio", _KERNEL,
                           _batched(tiles, products, 1, 1).reshape(4, 4, channels, -1), _KERNEL)
  tile_grad = _both_sides(_INPUT.T, _grid(_batched(products, kernel_tiles, 2, 2),
                                          (n, t, s, channels)))
  return _overlapped(tile_grad, h, w), kernel_grad


def _overlapped(tile_grad, h: int, w: int):
  """The input's gradient from its 4x4 tiles' gradients: the tiles start every 2 rows and
  columns of the padded input, so each of its positions of parity (r, q) sums the tile rows
  r and r + 2 (of this tile and of the one above) and columns q and q + 2."""
  n, t, s, channels = tile_grad[0][0].shape
  zero = jnp.zeros((), tile_grad[0][0].dtype)
  shifted = lambda part, down, right: lax.pad(
      part, zero, ((0, 0, 0), (down, 1 - down, 0), (right, 1 - right, 0), (0, 0, 0)))
  planes = [[shifted(tile_grad[r][q], 0, 0) + shifted(tile_grad[r + 2][q], 1, 0)
             + shifted(tile_grad[r][q + 2], 0, 1) + shifted(tile_grad[r + 2][q + 2], 1, 1)
             for q in range(2)] for r in range(2)]
  padded = jnp.stack([jnp.stack(row, axis=3) for row in planes], axis=2)
  padded = padded.reshape(n, 2 * t + 2, 2 * s + 2, channels)
  # Rows and columns past 2T + 2 (an odd H or W) fed no pooled output: their gradient is 0.
  padded = jnp.pad(padded, ((0, 0), (0, h + 2 - (2 * t + 2)), (0, w + 2 - (2 * s + 2)), (0, 0)))
  return padded[:, 1:h + 1, 1:w + 1, :]


conv_max_pool.defvjp(_forward, _backward)
