"""Layers shared by the models."""

import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pooling, stride 2, VALID (odd edges cropped, as Keras does).

  Written as reshape + max: XLA differentiates it with a cheap mask, where
  `reduce_window`'s gradient (select-and-scatter) is slow on CPU.
  """
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
