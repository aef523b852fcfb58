"""EfficientNetV2 (Tan & Le, 2021) with Keras's exact conventions, so Keras weights port 1:1.

Every variant is a block table plus width/depth coefficients, expanded by
`block_specs` into one `BlockSpec` per block; the module and the Keras layer
order (`keras_layers`, which the freezing rules use) are both built from that
one expansion. Module and parameter names follow Keras's layer names: Keras
`block2b_expand_bn` is Flax `block2b/expand_bn`, `stem_conv` is `stem_conv`.

Keras conventions kept: BatchNorm momentum 0.9 and epsilon 1e-3, TF "SAME"
padding, SE width from the block's input filters, stochastic depth
0.2 * b / num_blocks (none on block 0), and the built-in input rescaling
(B0-B3: ImageNet mean/std on [0, 1]; S/M/L: x / 128 - 1). Inputs are float
images in [0, 255].
"""

import dataclasses
import math
import re
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from bloodcell_jax.models import heads
from bloodcell_jax.models.layers import Conv, DepthwiseConv, batch_norm, prepare_input
from bloodcell_jax.models.registry import KerasPort, register

# One row per stage: block type, repeats, input filters, output filters,
# expansion ratio, squeeze-excitation ratio, first stride (all kernels are 3x3).
_B_TABLE = (
    ("fused", 1, 32, 16, 1, 0.0, 1),
    ("fused", 2, 16, 32, 4, 0.0, 2),
    ("fused", 2, 32, 48, 4, 0.0, 2),
    ("mbconv", 3, 48, 96, 4, 0.25, 2),
    ("mbconv", 5, 96, 112, 6, 0.25, 1),
    ("mbconv", 8, 112, 192, 6, 0.25, 2),
)
_S_TABLE = (
    ("fused", 2, 24, 24, 1, 0.0, 1),
    ("fused", 4, 24, 48, 4, 0.0, 2),
    ("fused", 4, 48, 64, 4, 0.0, 2),
    ("mbconv", 6, 64, 128, 4, 0.25, 2),
    ("mbconv", 9, 128, 160, 6, 0.25, 1),
    ("mbconv", 15, 160, 256, 6, 0.25, 2),
)
_M_TABLE = (
    ("fused", 3, 24, 24, 1, 0.0, 1),
    ("fused", 5, 24, 48, 4, 0.0, 2),
    ("fused", 5, 48, 80, 4, 0.0, 2),
    ("mbconv", 7, 80, 160, 4, 0.25, 2),
    ("mbconv", 14, 160, 176, 6, 0.25, 1),
    ("mbconv", 18, 176, 304, 6, 0.25, 2),
    ("mbconv", 5, 304, 512, 6, 0.25, 1),
)
_L_TABLE = (
    ("fused", 4, 32, 32, 1, 0.0, 1),
    ("fused", 7, 32, 64, 4, 0.0, 2),
    ("fused", 7, 64, 96, 4, 0.0, 2),
    ("mbconv", 10, 96, 192, 4, 0.25, 2),
    ("mbconv", 19, 192, 224, 6, 0.25, 1),
    ("mbconv", 25, 224, 384, 6, 0.25, 2),
    ("mbconv", 7, 384, 640, 6, 0.25, 1),
)


@dataclasses.dataclass(frozen=True)
class Variant:
  table: tuple
  width: float
  depth: float
  default_size: int  # Keras's ImageNet resolution (informative; any size >= 32 works)
  keras_name: str  # keras.applications constructor

  @property
  def imagenet_normalized(self) -> bool:
    return self.table is _B_TABLE


VARIANTS = {
    "efficientnetv2-b0": Variant(_B_TABLE, 1.0, 1.0, 224, "EfficientNetV2B0"),
    "efficientnetv2-b1": Variant(_B_TABLE, 1.0, 1.1, 240, "EfficientNetV2B1"),
    "efficientnetv2-b2": Variant(_B_TABLE, 1.1, 1.2, 260, "EfficientNetV2B2"),
    "efficientnetv2-b3": Variant(_B_TABLE, 1.2, 1.4, 300, "EfficientNetV2B3"),
    "efficientnetv2-s": Variant(_S_TABLE, 1.0, 1.0, 384, "EfficientNetV2S"),
    "efficientnetv2-m": Variant(_M_TABLE, 1.0, 1.0, 480, "EfficientNetV2M"),
    "efficientnetv2-l": Variant(_L_TABLE, 1.0, 1.0, 480, "EfficientNetV2L"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2
TOP_DROPOUT = 0.2

# Keras's initialisers: VarianceScaling(2, fan_out, truncated normal) for
# convolutions, VarianceScaling(1/3, fan_out, uniform) for the classifier.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
# A depthwise kernel (k, k, 1, C) has Keras fan_out k*k (its shape there is (k, k, C, 1)).
_depthwise_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal",
                                                   in_axis=-1, out_axis=-2)
_dense_init = nn.initializers.variance_scaling(1 / 3, "fan_out", "uniform")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  name: str  # Keras prefix without the underscore, e.g. "block2b"
  kind: str  # fused | mbconv
  in_filters: int
  out_filters: int
  expand_ratio: int
  se_ratio: float
  stride: int
  drop_rate: float
  kernel_size: int = 3

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_filters == self.out_filters


def round_filters(filters: float, width: float, divisor: int = 8) -> int:
  """Keras's rounding: to the nearest multiple of `divisor`, at least `divisor`."""
  filters *= width
  return int(max(divisor, int(filters + divisor / 2) // divisor * divisor))


def block_specs(variant: Variant, drop_connect_rate: float = DROP_CONNECT_RATE
                ) -> Tuple[BlockSpec, ...]:
  rows = [(kind, int(math.ceil(variant.depth * repeats)), round_filters(cin, variant.width),
           round_filters(cout, variant.width), expand, se, stride)
          for kind, repeats, cin, cout, expand, se, stride in variant.table]
  num_blocks = float(sum(row[1] for row in rows))
  specs, b = [], 0
  for stage, (kind, repeats, cin, cout, expand, se, stride) in enumerate(rows):
    for j in range(repeats):
      specs.append(BlockSpec(
          name=f"block{stage + 1}{chr(ord('a') + j)}", kind=kind,
          in_filters=cin if j == 0 else cout, out_filters=cout, expand_ratio=expand,
          se_ratio=se, stride=stride if j == 0 else 1,
          drop_rate=drop_connect_rate * b / num_blocks))
      b += 1
  return tuple(specs)


def stem_filters(variant: Variant) -> int:
  return round_filters(variant.table[0][2], variant.width)


def top_filters(variant: Variant) -> int:
  return round_filters(1280, variant.width)


def keras_layers(variant: Variant, include_top: bool = True) -> Tuple[Tuple[str, bool], ...]:
  """(Keras layer name, has weights) for every layer of the keras.applications model, in order.

  This is `model.layers` of `keras.applications.EfficientNetV2*(weights=None)`
  (weightless layers included: they count in the study's "first N layers").
  Names of weightless layers Keras numbers automatically may differ.
  """
  layers = [("input_layer", False), ("rescaling", False)]
  if variant.imagenet_normalized:
    layers.append(("normalization", False))
  layers += [("stem_conv", True), ("stem_bn", True), ("stem_activation", False)]
  for spec in block_specs(variant):
    p = spec.name + "_"
    if spec.expand_ratio != 1:
      layers += [(p + "expand_conv", True), (p + "expand_bn", True),
                 (p + "expand_activation", False)]
    if spec.kind == "mbconv":
      layers += [(spec.name + DEPTHWISE_SUFFIX, True), (p + "bn", True), (p + "activation", False)]
    if spec.se_ratio:
      layers += [(p + "se_squeeze", False), (p + "se_reshape", False), (p + "se_reduce", True),
                 (p + "se_expand", True), (p + "se_excite", False)]
    layers += [(p + "project_conv", True), (p + "project_bn", True)]
    if spec.kind == "fused" and spec.expand_ratio == 1:
      layers.append((p + "project_activation", False))
    if spec.residual:
      layers += [(p + "drop", False)] * bool(spec.drop_rate) + [(p + "add", False)]
  layers += [("top_conv", True), ("top_bn", True), ("top_activation", False)]
  if include_top:
    layers += [("avg_pool", False), ("top_dropout", False), ("predictions", True)]
  return tuple(layers)


DEPTHWISE_SUFFIX = "_dwconv2"
_BLOCK_LAYER = re.compile(r"^(block\d+[a-z])_(\w+)$")


def keras_to_flax_path(layer_name: str) -> str:
  """`block2b_expand_bn` -> `block2b/expand_bn`; top-level layers keep their name."""
  match = _BLOCK_LAYER.match(layer_name)
  return f"{match[1]}/{match[2]}" if match else layer_name


def _dtypes(module) -> dict:
  """A module's compute and parameter dtypes, passed on to every layer in it."""
  return {"dtype": module.dtype, "param_dtype": module.param_dtype}


class Block(nn.Module):
  """Fused-MBConv or MBConv block, layer for layer as in Keras."""
  spec: BlockSpec
  frozen_bn: Tuple[str, ...] = ()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _conv(self, features, kernel, stride, name, bias=False):
    return Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=bias,
                   kernel_init=_conv_init, **_dtypes(self), name=name)

  def _norm(self, x, name, train):
    return batch_norm(self, x, name, train, BN_EPSILON, self.frozen_bn)

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    s = self.spec
    filters = s.in_filters * s.expand_ratio
    x = inputs
    if s.expand_ratio != 1:
      # Fused blocks expand with the k x k convolution itself; MBConv with a 1x1.
      fused = s.kind == "fused"
      x = self._conv(filters, s.kernel_size if fused else 1, s.stride if fused else 1,
                     "expand_conv")(x)
      x = nn.swish(self._norm(x, "expand_bn", train))
    if s.kind == "mbconv":
      x = DepthwiseConv(s.kernel_size, s.stride, _depthwise_init, **_dtypes(self),
                        name="dwconv2")(x)
      x = nn.swish(self._norm(x, "bn", train))
    if s.se_ratio:
      se = x.mean(axis=(1, 2), keepdims=True)
      se = nn.swish(self._conv(max(1, int(s.in_filters * s.se_ratio)), 1, 1, "se_reduce", True)(se))
      x = x * nn.sigmoid(self._conv(filters, 1, 1, "se_expand", True)(se))
    project_is_spatial = s.kind == "fused" and s.expand_ratio == 1
    x = self._conv(s.out_filters, s.kernel_size if project_is_spatial else 1,
                   s.stride if project_is_spatial else 1, "project_conv")(x)
    x = self._norm(x, "project_bn", train)
    if project_is_spatial:
      x = nn.swish(x)
    if s.residual:
      if s.drop_rate:
        # Stochastic depth: drop the whole residual branch per example.
        x = nn.Dropout(s.drop_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(x)
      x = x + inputs
    return x


class EfficientNetV2(nn.Module):
  """EfficientNetV2 backbone with the Keras top, the study's head, or features only.

  head: "keras" = global average pooling, Dropout(0.2), Dense `predictions`
  (keras.applications' include_top); "flatten" = the study's Flatten, Dropout,
  Dense(dense_units, relu), Dropout, Dense `predictions`; "none" = features,
  pooled by `pooling` (avg | max | none for the feature map).
  frozen_bn: module paths of BatchNorm layers that run in inference mode even
  while training (the frozen layers; see `bloodcell_jax.freezing`).
  """
  variant: str = "efficientnetv2-s"
  num_classes: int = 8
  head: str = "keras"
  pooling: str = "avg"
  dense_units: int = 256
  dropout: float = 0.5
  top_dropout: float = TOP_DROPOUT
  drop_connect_rate: float = DROP_CONNECT_RATE
  frozen_bn: Tuple[str, ...] = ()
  input_norm: str = "none"  # layers.INPUT_NORMS, before the variant's own rescaling
  framing: str = "none"  # framing.FRAMINGS, before input_norm
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _bn(self, x, name, train):
    return batch_norm(self, x, name, train, BN_EPSILON, self.frozen_bn)

  def features(self, x, train: bool):
    v = VARIANTS[self.variant]
    x = prepare_input(x, self.framing, self.input_norm, self.output_dtype)
    if v.imagenet_normalized:
      x = (x / 255.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    else:
      x = x / 128.0 - 1.0
    x = x.astype(self.dtype)
    x = Conv(stem_filters(v), (3, 3), (2, 2), padding="SAME", use_bias=False,
                kernel_init=_conv_init, **_dtypes(self), name="stem_conv")(x)
    x = nn.swish(self._bn(x, "stem_bn", train))
    for spec in block_specs(v, self.drop_connect_rate):
      x = Block(spec, self.frozen_bn, **_dtypes(self), name=spec.name)(x, train)
    x = Conv(top_filters(v), (1, 1), use_bias=False, kernel_init=_conv_init,
                **_dtypes(self), name="top_conv")(x)
    return nn.swish(self._bn(x, "top_bn", train))

  @nn.compact
  def __call__(self, x, train: bool = False):
    return heads.top(self, self.features(x, train), train, kernel_init=_dense_init,
                     keras_top=self._keras_top)

  def _keras_top(self, x, dense, train: bool):
    """keras.applications' include_top: global average pooling, Dropout, Dense."""
    x = nn.Dropout(self.top_dropout, deterministic=not train)(heads.pool(x, "avg"))
    return dense(self.num_classes, "predictions")(x)

  @property
  def output_dtype(self):
    return heads.output_dtype(self.dtype)


def _factory(variant: str):
  def build(num_classes: int = 8, include_top: Optional[bool] = None, head: str = "keras",
            pooling: str = "avg", frozen_bn: Sequence[str] = (), **kwargs) -> EfficientNetV2:
    head = heads.checked_head(head, pooling, kwargs.get("input_norm", "none"),
                              kwargs.get("framing", "none"), include_top)
    return EfficientNetV2(variant=variant, num_classes=num_classes, head=head, pooling=pooling,
                          frozen_bn=tuple(frozen_bn), **kwargs)
  return build


def _keras_port(name: str) -> KerasPort:
  variant = VARIANTS[name]
  fixed = {"normalization": {"mean": IMAGENET_MEAN,
                             "variance": tuple(s * s for s in IMAGENET_STD)}}
  return KerasPort(
      layers=lambda include_top, model_args: keras_layers(variant, include_top),
      module_path=keras_to_flax_path, application=variant.keras_name,
      fixed_layers=fixed if variant.imagenet_normalized else {},
      weights_url=lambda include_top: (f"{KERAS_WEIGHTS_URL}{name}"
                                       f"{'' if include_top else '_notop'}.h5"))


KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"

_DEFAULTS = dict(
    head="keras",  # keras | flatten (the study's) | none
    pooling="avg",  # avg | max | none: of the features, for head=none
    dense_units=256, dropout=0.5,  # the study's head
    top_dropout=TOP_DROPOUT, drop_connect_rate=DROP_CONNECT_RATE,
    input_norm="none",  # none | grey_world | channel_standardize
    framing="none",  # none | nucleus: re-cut about the nucleus (models/framing.py)
    dtype="float32",  # bfloat16 on accelerators; auto: bfloat16 on a CPU that multiplies it
    param_dtype="float32")

for _name in VARIANTS:
  register(_name, head=("head_dense", "predictions"), frozen_batch_norm=True,
           keras=_keras_port(_name), pretrained=True, defaults=_DEFAULTS)(_factory(_name))
