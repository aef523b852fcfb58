"""What the ported backbones share after their features: the study's head, pooling, and the
checks of the head arguments."""

import flax.linen as nn
import jax.numpy as jnp

from bloodcell_jax.errors import UserError
from bloodcell_jax.models.layers import INPUT_NORMS

# "keras": keras.applications' include_top; "flatten": the study's head; "none": features.
HEADS = ("keras", "flatten", "none")
POOLINGS = ("avg", "max", "none")


def check_arguments(head: str, pooling: str, input_norm: str) -> None:
  for key, value, allowed in (("head", head, HEADS), ("pooling", pooling, POOLINGS),
                              ("input_norm", input_norm, INPUT_NORMS)):
    if value not in allowed:
      raise UserError(f"config.model.{key}='{value}': expected one of {', '.join(allowed)}")


def pool(x, pooling: str):
  """(N, H, W, C) features pooled as Keras's `pooling` argument: avg, max, or none."""
  if pooling == "avg":
    return x.mean(axis=(1, 2))
  if pooling == "max":
    return x.max(axis=(1, 2))
  return x


def study_head(x, dense, *, num_classes: int, dense_units: int, dropout: float, train: bool):
  """The study's Flatten, Dropout, Dense(dense_units, relu), Dropout, Dense `predictions`;
  `dense(width, name)` makes a model's Dense layer (its initialiser and dtypes)."""
  x = nn.Dropout(dropout, deterministic=not train)(x.reshape(x.shape[0], -1))
  x = nn.relu(dense(dense_units, "head_dense")(x))
  x = nn.Dropout(dropout, deterministic=not train)(x)
  return dense(num_classes, "predictions")(x)


def output_dtype(dtype):
  """float32, or float64 for a float64 model (bfloat16 computes, float32 comes out)."""
  return jnp.promote_types(dtype, jnp.float32)
