"""ConvNeXt (Liu et al., 2022) with `keras.applications.ConvNeXt*`'s conventions, so Keras weights
port 1:1.

One stage table (blocks and widths per stage) per size. Keras conventions kept: the built-in
ImageNet mean/std normalisation of [0, 255] input, a 4x4 stride-4 stem convolution and
LayerNorm (epsilon 1e-6), blocks of depthwise 7x7 convolution (with bias) -> LayerNorm ->
Dense(4C) -> exact GELU -> Dense(C) -> layer scale (init 1e-6) -> stochastic depth (rate rising
linearly to `drop_path_rate`, 0 in keras.applications) + residual, LayerNorm and a 2x2
stride-2 convolution between stages, and Glorot-uniform initialisers.

Flax names follow Keras's without the model prefix: Keras `convnext_tiny_stage_1_block_2_layernorm`
is `stage_1_block_2/layernorm`; the stem and downsampling layers, nested `Sequential`s in Keras,
are `stem_conv`, `stem_layernorm`, `downsampling_layernorm_0`, `downsampling_conv_0`, ...
"""

import dataclasses
import functools
import re
from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.models import heads, portable
from bloodcell_jax.models.layers import Conv, DepthwiseConv, prepare_input
from bloodcell_jax.models.registry import KerasPort, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LN_EPSILON = 1e-6
LAYER_SCALE_INIT = 1e-6


@dataclasses.dataclass(frozen=True)
class Variant:
  depths: Tuple[int, ...]  # blocks per stage
  widths: Tuple[int, ...]  # channels per stage
  keras_name: str  # keras.applications constructor
  keras_prefix: str  # Keras's model name, the prefix of its layer names and weight files


VARIANTS = {
    "convnext-tiny": Variant((3, 3, 9, 3), (96, 192, 384, 768), "ConvNeXtTiny", "convnext_tiny"),
    "convnext-small": Variant((3, 3, 27, 3), (96, 192, 384, 768), "ConvNeXtSmall",
                              "convnext_small"),
    "convnext-base": Variant((3, 3, 27, 3), (128, 256, 512, 1024), "ConvNeXtBase",
                             "convnext_base"),
    "convnext-large": Variant((3, 3, 27, 3), (192, 384, 768, 1536), "ConvNeXtLarge",
                              "convnext_large"),
    "convnext-xlarge": Variant((3, 3, 27, 3), (256, 512, 1024, 2048), "ConvNeXtXLarge",
                               "convnext_xlarge"),
}
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/convnext/"

_glorot = nn.initializers.xavier_uniform()


def _dtypes(module) -> dict:
  return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def _layer_norm(module, name):
  # Two-pass variance, as Keras computes it.
  return nn.LayerNorm(epsilon=LN_EPSILON, use_fast_variance=False, **_dtypes(module), name=name)


class LayerScale(nn.Module):
  """x times a learned per-channel scale (Keras's `LayerScale`, init 1e-6)."""
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(LAYER_SCALE_INIT), (x.shape[-1],),
                       self.param_dtype)
    return x * scale.astype(self.dtype)


class Block(nn.Module):
  drop_rate: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    width = inputs.shape[-1]
    x = DepthwiseConv(7, 1, _glorot, use_bias=True, **_dtypes(self), name="depthwise_conv")(inputs)
    x = _layer_norm(self, "layernorm")(x)
    x = nn.Dense(4 * width, kernel_init=_glorot, **_dtypes(self), name="pointwise_conv_1")(x)
    x = portable.gelu(x)
    x = nn.Dense(width, kernel_init=_glorot, **_dtypes(self), name="pointwise_conv_2")(x)
    x = LayerScale(**_dtypes(self), name="layer_scale")(x)
    if self.drop_rate:  # stochastic depth: the whole residual branch, per example
      x = nn.Dropout(self.drop_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(x)
    return inputs + x


class ConvNeXt(nn.Module):
  """ConvNeXt backbone with the Keras top, the study's head, or features only.

  head: "keras" = global average pooling, LayerNorm, Dense `predictions` (keras.applications'
  include_top); "flatten" = the study's head on the Keras base (its final LayerNorm on the
  feature map, Flatten, Dropout, Dense(dense_units, relu), Dropout, Dense); "none" = features
  pooled by `pooling` (avg | max | none), then the base's final LayerNorm, as Keras's
  include_top=False.
  """
  variant: str = "convnext-tiny"
  num_classes: int = 8
  head: str = "keras"
  pooling: str = "avg"
  dense_units: int = 256
  dropout: float = 0.5
  drop_path_rate: float = 0.0
  input_norm: str = "none"  # layers.INPUT_NORMS, before the built-in normalisation
  framing: str = "none"  # framing.FRAMINGS, before input_norm
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def features(self, x, train: bool):
    v = VARIANTS[self.variant]
    x = prepare_input(x, self.framing, self.input_norm, self.output_dtype)
    x = ((x / 255.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)).astype(self.dtype)
    conv = lambda width, k, name: Conv(width, (k, k), (k, k), padding="VALID",
                                          kernel_init=_glorot, **_dtypes(self), name=name)
    x = conv(v.widths[0], 4, "stem_conv")(x)
    x = _layer_norm(self, "stem_layernorm")(x)
    rates = np.linspace(0.0, self.drop_path_rate, sum(v.depths))
    b = 0
    for stage, (depth, width) in enumerate(zip(v.depths, v.widths)):
      if stage:
        x = _layer_norm(self, f"downsampling_layernorm_{stage - 1}")(x)
        x = conv(width, 2, f"downsampling_conv_{stage - 1}")(x)
      for j in range(depth):
        x = Block(float(rates[b]), **_dtypes(self), name=f"stage_{stage}_block_{j}")(x, train)
        b += 1
    return x

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.features(x, train)
    norm = _layer_norm(self, "head_layernorm")  # the base's last layer, in every head
    return heads.top(self, x, train, kernel_init=_glorot, base_norm=norm,
                     keras_top=functools.partial(self._keras_top, norm=norm))

  def _keras_top(self, x, dense, train: bool, norm):
    """keras.applications' include_top: global average pooling, `norm`, Dense."""
    del train  # no dropout in Keras's top
    return dense(self.num_classes, "predictions")(norm(heads.pool(x, "avg")))

  @property
  def output_dtype(self):
    return heads.output_dtype(self.dtype)


def keras_layers(variant: Variant, include_top: bool = True) -> Tuple[Tuple[str, bool], ...]:
  """(Keras layer name, has weights) for every layer of keras.applications' model, in order
  (`model.layers`; the stem and each downsampling step are one nested layer there). Without
  the top: pooling=None, whose final LayerNorm Keras names automatically."""
  p = variant.keras_prefix + "_"
  layers = [("input_layer", False), (p + "prestem_normalization", False), (p + "stem", True)]
  for stage, depth in enumerate(variant.depths):
    if stage:
      layers.append((f"{p}downsampling_block_{stage - 1}", True))
    for j in range(depth):
      block = f"{p}stage_{stage}_block_{j}_"
      layers += [(block + "depthwise_conv", True), (block + "layernorm", True),
                 (block + "pointwise_conv_1", True), (block + "gelu", False),
                 (block + "pointwise_conv_2", True), (block + "layer_scale", True),
                 (block + "identity", False)]
  if include_top:
    layers += [(p + "head_gap", False), (p + "head_layernorm", True), (p + "head_dense", True)]
  else:
    layers.append(("layer_normalization", True))
  return tuple(layers)


def _sublayers(variant: Variant):
  """The leaf layers of a Keras layer: the stem and downsampling steps hold two."""
  p = variant.keras_prefix + "_"

  def sublayers(layer: str) -> Tuple[str, ...]:
    if layer == p + "stem":
      return (p + "stem_conv", p + "stem_layernorm")
    match = re.fullmatch(re.escape(p) + r"downsampling_block_(\d)", layer)
    if match:
      return (f"{p}downsampling_layernorm_{match[1]}", f"{p}downsampling_conv_{match[1]}")
    return (layer,)
  return sublayers


def _module_path(variant: Variant):
  p = variant.keras_prefix + "_"

  def module_path(layer: str) -> str:
    if layer.startswith("layer_normalization"):  # the base's final LayerNorm, named by Keras
      return "head_layernorm"
    name = layer[len(p):] if layer.startswith(p) else layer
    if name == "head_dense":
      return "predictions"
    match = re.fullmatch(r"(stage_\d+_block_\d+)_(\w+)", name)
    return f"{match[1]}/{match[2]}" if match else name
  return module_path


def _keras_port(name: str) -> KerasPort:
  variant = VARIANTS[name]
  file_stem = variant.keras_prefix
  return KerasPort(
      layers=lambda include_top, model_args: keras_layers(variant, include_top),
      module_path=_module_path(variant), sublayers=_sublayers(variant),
      application=variant.keras_name, top_layer=variant.keras_prefix + "_head_dense",
      # Keras names the layer scale's unnamed variable "Variable" (2) or "variable_<n>" (3).
      weight_names={r"[Vv]ariable(_\d+)?": "scale"},
      weights_url=lambda include_top: (f"{KERAS_WEIGHTS_URL}{file_stem}"
                                       f"{'' if include_top else '_notop'}.h5"))


def _factory(variant: str):
  def build(num_classes: int = 8, include_top=None, head: str = "keras", pooling: str = "avg",
            **kwargs) -> ConvNeXt:
    head = heads.checked_head(head, pooling, kwargs.get("input_norm", "none"),
                              kwargs.get("framing", "none"), include_top)
    return ConvNeXt(variant=variant, num_classes=num_classes, head=head, pooling=pooling,
                    **kwargs)
  return build


_DEFAULTS = dict(
    head="keras",  # keras | flatten (the study's) | none
    pooling="avg",  # avg | max | none: of the features, for head=none
    dense_units=256, dropout=0.5,  # the study's head
    drop_path_rate=0.0,  # stochastic depth at the last block (keras.applications: 0)
    input_norm="none",  # none | grey_world | channel_standardize
    framing="none",  # none | nucleus: re-cut about the nucleus (models/framing.py)
    dtype="float32",  # bfloat16 on accelerators; auto: bfloat16 on a CPU that multiplies it
    param_dtype="float32")

for _name in VARIANTS:
  register(_name, head=("head_dense", "predictions"), keras=_keras_port(_name), pretrained=True,
           defaults=_DEFAULTS)(_factory(_name))
