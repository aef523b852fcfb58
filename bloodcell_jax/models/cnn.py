"""The study's custom CNN: 4 x (Conv, ReLU, MaxPool), Flatten, Dropout, Dense, Dropout, Dense.

Each block runs Conv -> MaxPool -> [Norm] -> activation. Without normalisation
this equals the study's Conv -> ReLU -> MaxPool exactly (max and ReLU commute);
with it, the statistics are those of the pooled map.
"""

from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from bloodcell_jax.errors import UserError
from bloodcell_jax.models import pooling
from bloodcell_jax.models.framing import FRAMINGS
from bloodcell_jax.models.layers import (
  INPUT_NORMS,
  batch_norm,
  mix_style,
  prepare_input,
)
from bloodcell_jax.models.registry import register

_ACTIVATIONS = {"relu": nn.relu, "leaky_relu": nn.leaky_relu}
# MixStyle goes where features still describe style more than class: the early blocks.
_MIX_STYLE_BLOCKS = 2


class CNN(nn.Module):
  """Takes float images in [0, 255] (N, H, W, 3); returns logits.

  `norm` adds BatchNorm or GroupNorm after each convolution, `head` chooses
  Flatten (the study) or global average pooling.
  """
  num_classes: int = 8
  filters: Sequence[int] = (32, 64, 128, 256)
  kernel_size: int = 3
  dense_units: int = 256
  dropout: float = 0.5
  activation: str = "relu"
  norm: str = "none"
  head: str = "flatten"
  input_norm: str = "none"  # layers.INPUT_NORMS
  framing: str = "none"  # framing.FRAMINGS, before input_norm
  frozen_bn: Tuple[str, ...] = ()  # BatchNorm layers in inference mode while training
  mix_style: float = 0.0  # probability of MixStyle after the first two blocks (training only)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def _dtypes(self) -> dict:
    return {"dtype": self.dtype, "param_dtype": self.param_dtype}

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = _ACTIVATIONS[self.activation]
    x = prepare_input(x, self.framing, self.input_norm, self.dtype) / 255.0
    for i, features in enumerate(self.filters):
      # Pool first: for a monotone activation max-pooling commutes with it, and the
      # normalisation and activation then touch 4x fewer values (the step's
      # memory traffic, not its FLOPs, dominates on CPU).
      # nn.Conv's parameters; the convolution and the pooling fused on CPU (pooling.py).
      x = pooling.ConvMaxPool(features, self.kernel_size, use_bias=self.norm == "none",
                              name=f"conv{i}", **self._dtypes)(x, train)
      x = act(self._normalize(x, train, f"norm{i}"))
      if train and self.mix_style > 0 and i < _MIX_STYLE_BLOCKS:
        x = mix_style(x, self.make_rng("dropout"), self.mix_style)
    x = x.reshape(x.shape[0], -1) if self.head == "flatten" else x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = act(nn.Dense(self.dense_units, **self._dtypes, name="dense")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, **self._dtypes, name="logits")(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))  # bfloat16 -> float32

  def _normalize(self, x, train, name):
    if self.norm == "batch":
      # Keras's epsilon and momentum (0.9: statistics settle within short runs).
      return batch_norm(self, x, name, train, 1e-3, self.frozen_bn)
    if self.norm == "group":
      return nn.GroupNorm(num_groups=min(8, x.shape[-1]), epsilon=1e-3,
                          **self._dtypes, name=name)(x)
    return x


_DEFAULTS = dict(
    filters=CNN.filters, kernel_size=CNN.kernel_size, dense_units=CNN.dense_units,
    dropout=CNN.dropout,
    activation=CNN.activation,  # relu | leaky_relu
    norm=CNN.norm,  # none | batch | group
    head=CNN.head,  # flatten | gap
    input_norm=CNN.input_norm,  # none | grey_world | channel_standardize
    framing="none",  # none | nucleus: re-cut about the nucleus (models/framing.py)
    mix_style=CNN.mix_style,  # 0..1: probability of mixing feature styles (layers.mix_style)
    dtype="float32",  # compute dtype (bfloat16 on accelerators)
    # float64 (with dtype float64 and JAX_ENABLE_X64=1) makes rounding negligible, for
    # numerical checks across device and process layouts.
    param_dtype="float32")


@register("cnn", head=("dense", "logits"), frozen_batch_norm=True, defaults=_DEFAULTS)
def cnn(num_classes: int = 8, **kwargs) -> CNN:
  for key, allowed in (("activation", _ACTIVATIONS), ("norm", ("none", "batch", "group")),
                       ("head", ("flatten", "gap")), ("input_norm", INPUT_NORMS),
                       ("framing", FRAMINGS)):
    value = kwargs.get(key, getattr(CNN, key))
    if value not in allowed:
      raise UserError(f"config.model.{key}='{value}': expected one of {', '.join(allowed)}")
  if not 0.0 <= kwargs.get("mix_style", 0.0) <= 1.0:
    raise UserError(f"config.model.mix_style={kwargs['mix_style']}: expected a probability "
                    "in [0, 1]")
  kwargs["filters"] = tuple(kwargs.get("filters", CNN.filters))
  kwargs["frozen_bn"] = tuple(kwargs.get("frozen_bn", ()))
  return CNN(num_classes=num_classes, **kwargs)
