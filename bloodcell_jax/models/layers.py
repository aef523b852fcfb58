"""Layers shared by the models."""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bloodcell_jax.models import framing, winograd
from bloodcell_jax.models.batch_norm import BatchNorm
from bloodcell_jax.models.depthwise import depthwise_conv2d
from bloodcell_jax.models.pooling import max_pool_2x2  # noqa: F401  (re-exported)

# Keras's usual BatchNorm momentum (MobileNetV3 sets 0.999).
BATCH_NORM_MOMENTUM = 0.9

INPUT_NORMS = ("none", "grey_world", "channel_standardize", "stain_density", "relative_density")

# stain_density: the grey level of the nucleus's mean density (0: white, 1: black).
NUCLEUS_DENSITY = 0.8
# Densities above this (per channel) are a dark border or debris, not stain.
MAX_DENSITY = 3.0


def normalize_input(x, method: str):
  """Per-image colour normalisation of float images in [0, 255], before the network.

  grey_world: each channel scaled so that its mean is the image's mean grey (a camera's
  white balance and a stain's overall cast removed). channel_standardize: each channel
  shifted and scaled to zero mean and unit variance over the image, Reinhard et al.'s
  colour transfer in RGB with the target statistics left to the first layer (removes
  gains and offsets per channel: illumination, contrast, white balance). stain_density: see
  `stain_density`. Applied inside the model, so training, evaluation, prediction and exports
  all see the same input.
  """
  if method == "none":
    return x
  if method == "stain_density":
    return stain_density(x)
  if method == "relative_density":
    return relative_density(x)
  mean = x.mean(axis=(1, 2), keepdims=True)
  if method == "grey_world":
    return x * (mean.mean(axis=-1, keepdims=True) / jnp.maximum(mean, 1.0))
  if method == "channel_standardize":
    std = jnp.sqrt(jnp.square(x - mean).mean(axis=(1, 2), keepdims=True))
    return (x - mean) / jnp.maximum(std, 1.0) * 64.0 + 128.0  # back on the [0, 255] scale
  raise ValueError(f"input normalisation {method!r}: expected one of {', '.join(INPUT_NORMS)}")


def densities_and_nucleus(x):
  """Per channel, the optical density of float images in [0, 255] against their own background
  (at most MAX_DENSITY), (B, H, W, 3); and the nucleus weights (B, H, W)."""
  fill = framing.background(x)
  return (jnp.minimum(framing.optical_density(x, fill), MAX_DENSITY),
          framing.nucleus_weights(x, fill))


def nucleus_mean(values, weights):
  """The nucleus-weighted mean of `values` over each image's pixels, keeping their axes."""
  return ((weights * values).sum(axis=(1, 2), keepdims=True)
          / jnp.maximum(weights.sum(axis=(1, 2), keepdims=True), 1e-6))


def stain_density(x):
  """Grey images of how much stain each pixel holds, for float images in [0, 255]: the optical
  density summed over the channels against the image's own background, scaled so that the
  nucleus's mean density is NUCLEUS_DENSITY, shown dark on white (255 - 255 * density).

  What differs between labs' stains and cameras (illumination, white balance, the stain's hue
  and strength, a yellow or blue background) goes; where stain is and how dense it is
  relative to the nucleus stays. The colour of eosinophil granules goes too: their density
  and texture remain.
  """
  density, weights = densities_and_nucleus(x)
  density = density.sum(axis=-1)
  nucleus = nucleus_mean(density, weights)
  scaled = jnp.clip(density * (NUCLEUS_DENSITY / jnp.maximum(nucleus, 0.05)), 0.0, 1.0)
  return (255.0 * (1.0 - scaled))[..., None] * jnp.ones((3,), x.dtype)  # as RGB


def relative_density(x):
  """Colour images of each channel's optical density against the image's own background,
  divided by the nucleus's mean density in that channel (scaled so that it is NUCLEUS_DENSITY),
  shown dark on white.

  `stain_density` per channel: the nucleus comes out the same grey in every lab whatever its
  stain's hue (PBC's purple, LISC's magenta, Bio-Net's violet-blue), and whatever absorbs
  differently from it keeps its colour relative to it: eosinophil and basophil granules, red
  cells, the blue cytoplasm of young cells.
  """
  density, weights = densities_and_nucleus(x)
  nucleus = nucleus_mean(density, weights[..., None])
  # A channel the nucleus barely absorbs is scaled as if it absorbed a quarter of the mean
  # channel's density: its noise is not blown up.
  floor = jnp.maximum(0.25 * nucleus.mean(axis=-1, keepdims=True), 0.02)
  scaled = jnp.clip(density * (NUCLEUS_DENSITY / jnp.maximum(nucleus, floor)), 0.0, 1.0)
  return 255.0 * (1.0 - scaled)


def prepare_input(x, framing_method: str, input_norm: str, dtype):
  """Images in [0, 255] framed (framing.FRAMINGS) and colour-normalised (INPUT_NORMS), in
  `dtype`; both in float32 (the crop geometry and the logarithms of small ratios need it)."""
  x = framing.apply_framing(jnp.asarray(x, jnp.float32), framing_method)
  return jnp.asarray(normalize_input(x, input_norm), dtype)


def batch_norm_dtypes(dtype, param_dtype) -> dict:
  """BatchNorm's dtype arguments: statistics and running averages in float32, or in float64
  when the parameters are (numerical checks with JAX_ENABLE_X64)."""
  return {"dtype": dtype, "param_dtype": param_dtype,
          "force_float32_reductions": jnp.dtype(param_dtype) != jnp.float64}


def batch_norm(module: nn.Module, x, name: str, train: bool, epsilon: float = 1e-3,
               frozen: Tuple[str, ...] = (), momentum: float = BATCH_NORM_MOMENTUM,
               product_gradient: bool = True):
  """Keras's BatchNorm (momentum 0.9 unless the model says otherwise) as `module`'s child.

  `frozen` holds module paths ("block2b/expand_bn") of BatchNorm layers that run on their
  running statistics even while training (Keras's frozen layers); the path is this layer's
  own within the model's variables. `product_gradient`: see models/batch_norm.py.
  """
  path = "/".join((*module.scope.path, name))
  return BatchNorm(use_running_average=not train or path in frozen, momentum=momentum,
                   epsilon=epsilon, **batch_norm_dtypes(module.dtype, module.param_dtype),
                   product_gradient=product_gradient, name=name)(x)


# MixStyle's Beta(alpha, alpha) for the mixing weight (Zhou et al. 2021's 0.1: mostly one
# image's style, sometimes an even blend).
MIX_STYLE_ALPHA = 0.1


def mix_style(x, rng, p: float, alpha: float = MIX_STYLE_ALPHA, epsilon: float = 1e-6):
  """MixStyle (Zhou et al. 2021): with probability p, each image's feature statistics (per
  channel mean and standard deviation over its pixels, a proxy for its lab's stain, camera and
  focus) are replaced by a random blend of its own and another image's of the batch, so that
  the layers after it learn content under styles the training set never paired with it.
  Training only; no parameters, so a model with it exports like one without."""
  mean = jax.lax.stop_gradient(x.mean(axis=(1, 2), keepdims=True))
  std = jax.lax.stop_gradient(jnp.sqrt(x.var(axis=(1, 2), keepdims=True) + epsilon))
  weight_key, order_key, apply_key = jax.random.split(rng, 3)
  weight = jax.random.beta(weight_key, alpha, alpha, mean.shape[:1] + (1, 1, 1)).astype(x.dtype)
  order = jax.random.permutation(order_key, x.shape[0])
  mixed_mean = weight * mean + (1 - weight) * mean[order]
  mixed_std = weight * std + (1 - weight) * std[order]
  styled = (x - mean) / std * mixed_std + mixed_mean
  return jnp.where(jax.random.uniform(apply_key) < p, styled, x)


def Conv(*args, **kwargs) -> nn.Conv:  # pylint: disable=invalid-name  (a module, as nn.Conv)
  """nn.Conv whose convolutions run on the CPU kernels where one CPU device runs them
  (native.py): wide 3x3 ones by Winograd's F(4x4) (winograd.py), the others by oneDNN."""
  return nn.Conv(*args, conv_general_dilated=winograd.conv_general_dilated, **kwargs)


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution, TF "SAME" padding; kernel (k, k, 1, C), optional bias.

  Goes through `depthwise_conv2d`, fast on XLA:CPU (its grouped convolution is not).
  """
  kernel_size: int = 3
  stride: int = 1
  kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]), self.param_dtype)
    y = depthwise_conv2d(x.astype(self.dtype), kernel[:, :, 0, :].astype(self.dtype),
                         self.stride)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],),
                         self.param_dtype).astype(self.dtype)
    return y
