"""What the ported backbones (EfficientNetV2, ConvNeXt, MobileNetV3) share after their
features: the choice of head (`top`), the study's head, pooling, and the head arguments."""

from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from bloodcell_jax.errors import UserError
from bloodcell_jax.models.framing import FRAMINGS
from bloodcell_jax.models.layers import INPUT_NORMS

# "keras": keras.applications' include_top; "flatten": the study's head; "none": features.
HEADS = ("keras", "flatten", "none")
POOLINGS = ("avg", "max", "none")


def checked_head(head: str, pooling: str, input_norm: str, framing: str,
                 include_top: Optional[bool] = None) -> str:
  """The head a family builds: "none" for keras.applications' `include_top=False`, else
  `head`; a head, pooling, input_norm or framing not in HEADS, POOLINGS, INPUT_NORMS or
  FRAMINGS is a UserError."""
  if include_top is not None and not include_top:
    head = "none"
  for key, value, allowed in (("head", head, HEADS), ("pooling", pooling, POOLINGS),
                              ("input_norm", input_norm, INPUT_NORMS),
                              ("framing", framing, FRAMINGS)):
    if value not in allowed:
      raise UserError(f"config.model.{key}='{value}': expected one of {', '.join(allowed)}")
  return head


def top(module, features, train: bool, *, kernel_init, keras_top: Callable,
        base_norm: Optional[Callable] = None):
  """The head `module.head` names on the backbone's `features` (N, H, W, C), in the model's
  output dtype (`output_dtype`).

  * "keras": `keras_top(features, dense, train)`, the family's keras.applications include_top;
  * "flatten": the study's head (`study_head`) on the feature map, after `base_norm`;
  * "none": the features pooled by `module.pooling` (avg | max | none), then `base_norm`.

  `module` is the backbone, with the fields head, pooling, num_classes, dense_units, dropout,
  dtype and param_dtype; `dense(width, name)` makes one of its Dense layers, initialised by
  `kernel_init`. `base_norm`: the layer that ends the family's base (ConvNeXt's LayerNorm).
  """
  norm = base_norm if base_norm is not None else (lambda x: x)
  dense = lambda width, name: nn.Dense(width, kernel_init=kernel_init, dtype=module.dtype,
                                       param_dtype=module.param_dtype, name=name)
  if module.head == "keras":
    x = keras_top(features, dense, train)
  elif module.head == "flatten":
    x = study_head(norm(features), dense, num_classes=module.num_classes,
                   dense_units=module.dense_units, dropout=module.dropout, train=train)
  else:
    x = norm(pool(features, module.pooling))
  return x.astype(output_dtype(module.dtype))


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
