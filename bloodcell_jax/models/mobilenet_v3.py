"""MobileNetV3 (Howard et al., 2019), Small and Large, with `keras.applications`' conventions, so
Keras weights port 1:1.

Keras conventions kept: the built-in rescaling x / 127.5 - 1 of [0, 255] input; hard-swish
x * relu6(x + 3) / 6 and hard-sigmoid relu6(x + 3) / 6; BatchNorm epsilon 1e-3 and momentum
0.999; Keras's `_depth` rounding of every width after the `alpha` multiplier (the stem keeps
16); stride-2 depthwise convolutions padded as Keras's `correct_pad` (TF "SAME" for inputs of
known size); squeeze-excitation on the expanded width, reduced to a quarter; `minimalistic`:
3x3 kernels, ReLU, no squeeze-excitation; the last 1x1 convolution to 6x the last block's
width; the top of pooling, a 1x1 `conv_2` with bias, activation, Dropout(0.2) and a 1x1
`logits` convolution. Flax names are Keras's layer names, blocks nested: Keras
`expanded_conv_3_depthwise_bn` is `expanded_conv_3/depthwise_bn`.
"""

import dataclasses
import re
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bloodcell_jax.errors import UserError
from bloodcell_jax.models import heads, native
from bloodcell_jax.models.layers import Conv, DepthwiseConv, batch_norm, prepare_input
from bloodcell_jax.models.registry import KerasPort, register

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999
TOP_DROPOUT = 0.2
SE_RATIO = 0.25

# One row per block: expansion, output width (before alpha), kernel ("k": the variant's 5, or
# 3 when minimalistic), stride, squeeze-excitation, activation ("relu", or "act": hard-swish,
# ReLU when minimalistic).
_SMALL = ((1, 16, 3, 2, True, "relu"), (72 / 16, 24, 3, 2, False, "relu"),
          (88 / 24, 24, 3, 1, False, "relu"), (4, 40, "k", 2, True, "act"),
          (6, 40, "k", 1, True, "act"), (6, 40, "k", 1, True, "act"),
          (3, 48, "k", 1, True, "act"), (3, 48, "k", 1, True, "act"),
          (6, 96, "k", 2, True, "act"), (6, 96, "k", 1, True, "act"),
          (6, 96, "k", 1, True, "act"))
_LARGE = ((1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"),
          (3, 24, 3, 1, False, "relu"), (3, 40, "k", 2, True, "relu"),
          (3, 40, "k", 1, True, "relu"), (3, 40, "k", 1, True, "relu"),
          (6, 80, 3, 2, False, "act"), (2.5, 80, 3, 1, False, "act"),
          (2.3, 80, 3, 1, False, "act"), (2.3, 80, 3, 1, False, "act"),
          (6, 112, 3, 1, True, "act"), (6, 112, 3, 1, True, "act"),
          (6, 160, "k", 2, True, "act"), (6, 160, "k", 1, True, "act"),
          (6, 160, "k", 1, True, "act"))


@dataclasses.dataclass(frozen=True)
class Variant:
  table: tuple
  last_point: int  # width of the top's conv_2
  keras_name: str


VARIANTS = {
    "mobilenetv3-small": Variant(_SMALL, 1024, "MobileNetV3Small"),
    "mobilenetv3-large": Variant(_LARGE, 1280, "MobileNetV3Large"),
}
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
STEM_WIDTH = 16


def depth(v: float, divisor: int = 8) -> int:
  """Keras's `_depth`: to the nearest multiple of 8 (at least 8), never 10% below v."""
  rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * v else rounded


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  name: str  # Keras prefix without the underscore: expanded_conv, expanded_conv_1, ...
  in_width: int
  expanded: int  # width after the 1x1 expansion (block 0 has none)
  out_width: int
  kernel: int
  stride: int
  se_width: int  # 0: no squeeze-excitation
  activation: str  # relu | hard_swish

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_width == self.out_width


def block_specs(variant: Variant, alpha: float, minimalistic: bool) -> Tuple[BlockSpec, ...]:
  specs, width = [], STEM_WIDTH
  for i, (expansion, out, kernel, stride, se, act) in enumerate(variant.table):
    expanded = depth(width * expansion) if i else width
    specs.append(BlockSpec(
        name=f"expanded_conv_{i}" if i else "expanded_conv", in_width=width,
        expanded=expanded, out_width=depth(out * alpha),
        kernel=(3 if minimalistic else 5) if kernel == "k" else kernel, stride=stride,
        se_width=depth(expanded * SE_RATIO) if se and not minimalistic else 0,
        activation="hard_swish" if act == "act" and not minimalistic else "relu"))
    width = specs[-1].out_width
  return tuple(specs)


def _activation(name: str):
  return jax.nn.hard_swish if name == "hard_swish" else nn.relu


def _hard_sigmoid(x):
  return jax.nn.relu6(x + 3.0) / 6.0


# Keras's glorot_uniform; a Keras depthwise kernel is (k, k, C, 1), this one (k, k, 1, C).
_glorot = nn.initializers.xavier_uniform()
_depthwise_glorot = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=-1,
                                                     out_axis=-2)


def _dtypes(module) -> dict:
  return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def _conv(module, width, name, bias=False):
  return Conv(width, (1, 1), use_bias=bias, kernel_init=_glorot, **_dtypes(module), name=name)


def _bn(module, x, name, train):
  # With XLA's depthwise convolutions, JAX's derivative: the gradients reaching these
  # BatchNorms are hard-swish and squeeze-excitation fusions (models/batch_norm.py). With
  # oneDNN's, the products: the step ran 10% faster (536 and 549 against 485 and 496 images/s).
  return batch_norm(module, x, name, train, BN_EPSILON, module.frozen_bn, BN_MOMENTUM,
                    product_gradient=native.in_use())


class Block(nn.Module):
  """Inverted residual block, layer for layer as Keras's `_inverted_res_block`."""
  spec: BlockSpec
  frozen_bn: Tuple[str, ...] = ()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    s, act = self.spec, _activation(self.spec.activation)
    x = inputs
    if s.name != "expanded_conv":
      x = act(_bn(self, _conv(self, s.expanded, "expand")(x), "expand_bn", train))
    x = DepthwiseConv(s.kernel, s.stride, _depthwise_glorot, **_dtypes(self), name="depthwise")(x)
    x = act(_bn(self, x, "depthwise_bn", train))
    if s.se_width:
      se = x.mean(axis=(1, 2), keepdims=True)
      se = nn.relu(_conv(self, s.se_width, "squeeze_excite_conv", bias=True)(se))
      x = x * _hard_sigmoid(_conv(self, s.expanded, "squeeze_excite_conv_1", bias=True)(se))
    x = _bn(self, _conv(self, s.out_width, "project")(x), "project_bn", train)
    return x + inputs if s.residual else x


class MobileNetV3(nn.Module):
  """MobileNetV3 backbone with the Keras top, the study's head, or features only.

  head: "keras" = keras.applications' include_top (pooling, conv_2, activation, Dropout,
  `predictions` as Keras's 1x1 `logits`); "flatten" = the study's Flatten, Dropout,
  Dense(dense_units, relu), Dropout, Dense on the base's feature map; "none" = features,
  pooled by `pooling` (avg | max | none). frozen_bn: module paths of BatchNorm layers in
  inference mode while training.
  """
  variant: str = "mobilenetv3-small"
  num_classes: int = 8
  alpha: float = 1.0
  minimalistic: bool = False
  head: str = "keras"
  pooling: str = "avg"
  dense_units: int = 256
  dropout: float = 0.5
  top_dropout: float = TOP_DROPOUT
  frozen_bn: Tuple[str, ...] = ()
  input_norm: str = "none"  # layers.INPUT_NORMS, before the built-in rescaling
  framing: str = "none"  # framing.FRAMINGS, before input_norm
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def _activation_name(self) -> str:
    return "relu" if self.minimalistic else "hard_swish"

  def features(self, x, train: bool):
    x = prepare_input(x, self.framing, self.input_norm, self.output_dtype)
    x = (x / 127.5 - 1.0).astype(self.dtype)
    act = _activation(self._activation_name)
    x = Conv(STEM_WIDTH, (3, 3), (2, 2), padding="SAME", use_bias=False, kernel_init=_glorot,
                **_dtypes(self), name="conv")(x)
    x = act(_bn(self, x, "conv_bn", train))
    for spec in block_specs(VARIANTS[self.variant], self.alpha, self.minimalistic):
      x = Block(spec, self.frozen_bn, **_dtypes(self), name=spec.name)(x, train)
    x = _conv(self, depth(x.shape[-1] * 6), "conv_1")(x)
    return act(_bn(self, x, "conv_1_bn", train))

  @nn.compact
  def __call__(self, x, train: bool = False):
    return heads.top(self, self.features(x, train), train, kernel_init=_glorot,
                     keras_top=self._keras_top)

  def _keras_top(self, x, dense, train: bool):
    """keras.applications' include_top: pooling, conv_2, activation, Dropout, and Keras's
    1x1 `logits` convolution as `predictions` (not a Dense layer)."""
    del dense
    last_point = VARIANTS[self.variant].last_point
    width = depth(last_point * self.alpha) if self.alpha > 1.0 else last_point
    x = _conv(self, width, "conv_2", bias=True)(x.mean(axis=(1, 2), keepdims=True))
    x = nn.Dropout(self.top_dropout, deterministic=not train)(
        _activation(self._activation_name)(x))
    return _conv(self, self.num_classes, "predictions", bias=True)(x).reshape(x.shape[0], -1)

  @property
  def output_dtype(self):
    return heads.output_dtype(self.dtype)


def keras_layers(variant: Variant, include_top: bool = True, alpha: float = 1.0,
                 minimalistic: bool = False) -> Tuple[Tuple[str, bool], ...]:
  """(Keras layer name, has weights) for every layer of keras.applications' model, in order
  (without the top: pooling=None). Activation layers Keras names automatically are named
  here by what they are."""
  layers = [("input_layer", False), ("rescaling", False), ("conv", True), ("conv_bn", True),
            ("stem_activation", False)]
  for spec in block_specs(variant, alpha, minimalistic):
    p = spec.name + "_"
    if spec.name != "expanded_conv":
      layers += [(p + "expand", True), (p + "expand_bn", True), (p + "expand_activation", False)]
    if spec.stride == 2:
      layers.append((p + "depthwise_pad", False))
    layers += [(p + "depthwise", True), (p + "depthwise_bn", True),
               (p + "depthwise_activation", False)]
    if spec.se_width:
      layers += [(p + "squeeze_excite_avg_pool", False), (p + "squeeze_excite_conv", True),
                 (p + "squeeze_excite_relu", False), (p + "squeeze_excite_conv_1", True),
                 (p + "squeeze_excite_hard_sigmoid", False), (p + "squeeze_excite_mul", False)]
    layers += [(p + "project", True), (p + "project_bn", True)]
    if spec.residual:
      layers.append((p + "add", False))
  layers += [("conv_1", True), ("conv_1_bn", True), ("conv_1_activation", False)]
  if include_top:
    layers += [("global_average_pooling2d", False), ("conv_2", True), ("conv_2_activation", False),
               ("dropout", False), ("logits", True), ("flatten", False), ("predictions", False)]
  return tuple(layers)


_BLOCK_LAYER = re.compile(r"^(expanded_conv(?:_\d+)?)_(\w+)$")


def keras_to_flax_path(layer: str) -> str:
  """`expanded_conv_3_depthwise_bn` -> `expanded_conv_3/depthwise_bn`; Keras's `logits` is
  `predictions`; other layers keep their name."""
  if layer == "logits":
    return "predictions"
  match = _BLOCK_LAYER.match(layer)
  return f"{match[1]}/{match[2]}" if match else layer


def _keras_port(name: str) -> KerasPort:
  variant = VARIANTS[name]
  kind = name.split("-")[1]
  return KerasPort(
      layers=lambda include_top, model_args: keras_layers(
          variant, include_top, minimalistic=model_args.get("minimalistic", False)),
      module_path=keras_to_flax_path, application=variant.keras_name, top_layer="logits",
      # The files of alpha 1, not minimalistic (other widths: pass the file with --keras_weights).
      weights_url=lambda include_top: (f"{KERAS_WEIGHTS_URL}weights_mobilenet_v3_{kind}_224_1.0_"
                                       f"float{'' if include_top else '_no_top_v2'}.h5"))


def _factory(variant: str):
  def build(num_classes: int = 8, include_top=None, head: str = "keras", pooling: str = "avg",
            frozen_bn=(), **kwargs) -> MobileNetV3:
    head = heads.checked_head(head, pooling, kwargs.get("input_norm", "none"),
                              kwargs.get("framing", "none"), include_top)
    if not kwargs.get("alpha", 1.0) > 0:
      raise UserError(f"config.model.alpha={kwargs['alpha']}: expected a width multiplier > 0")
    return MobileNetV3(variant=variant, num_classes=num_classes, head=head, pooling=pooling,
                       frozen_bn=tuple(frozen_bn), **kwargs)
  return build


_DEFAULTS = dict(
    alpha=1.0,  # width multiplier (ImageNet weights: 0.75 or 1.0)
    minimalistic=False,  # 3x3 kernels, ReLU, no squeeze-excitation
    head="keras",  # keras | flatten (the study's) | none
    pooling="avg",  # avg | max | none: of the features, for head=none
    dense_units=256, dropout=0.5,  # the study's head
    top_dropout=TOP_DROPOUT,
    input_norm="none",  # none | grey_world | channel_standardize
    framing="none",  # none | nucleus: re-cut about the nucleus (models/framing.py)
    dtype="float32",  # bfloat16 on accelerators
    param_dtype="float32")

for _name in VARIANTS:
  register(_name, head=("conv_2", "head_dense", "predictions"), frozen_batch_norm=True,
           keras=_keras_port(_name), pretrained=True, defaults=_DEFAULTS)(_factory(_name))
