"""RandAugment (Cubuk et al. 2020) and AugMix (Hendrycks et al. 2020) over batches, per image.

Magnitudes live on one [0, 1] scale (Keras's `factor`; the study's best RandAugment
magnitude was 0.5, its AugMix severity 0.3). `LEVELS`, the registry of these ops by name, maps
a magnitude to each op's parameter, with the ranges of timm's "increasing" policies: magnitude 0
leaves the image unchanged for every op that has a magnitude.

Randomness comes in as per-image uniform draws (and Gamma draws for AugMix's
Dirichlet and Beta), so each image gets its own op choices, magnitudes and signs
while the ops themselves run once per batch on the images that chose them.
Images stay float32 between ops (no rounding to uint8 as in PIL: each op would pay
two conversions, more than moving float images costs).
"""

import dataclasses
from typing import Callable, Sequence

import tensorflow as tf

from bloodcell_jax.augment import image_ops
from bloodcell_jax.registry import Registry

# Per application of one op: [sign, extra, extra] (cutout's centre uses the extras).
OP_UNIFORMS = 3


@dataclasses.dataclass(frozen=True)
class Level:
  """How a magnitude in [0, 1] becomes an op's parameter."""
  apply: Callable  # (images, magnitude (N,), uniforms (N, OP_UNIFORMS), fill, fill_mode)
  signed: bool = False  # the magnitude's sign is random (rotate left or right, ...)


def _enhance(op):
  return Level(lambda x, m, u, fill, mode: op(x, 1.0 + 0.9 * m), signed=True)


def _geometric(op, scale):
  return Level(lambda x, m, u, fill, mode: op(x, scale(x) * m, fill=fill, fill_mode=mode),
               signed=True)


def _width(images):
  return tf.cast(tf.shape(images)[2], tf.float32)


def _height(images):
  return tf.cast(tf.shape(images)[1], tf.float32)


def _cutout(images, m, u, fill, mode):
  del mode
  side = 0.4 * m * tf.minimum(_width(images), _height(images))
  return image_ops.cutout(images, u[:, 1] * _width(images), u[:, 2] * _height(images), side,
                          fill=fill)


LEVELS = Registry("magnitude op")
LEVELS.register("identity", Level(lambda x, m, u, fill, mode: x))
LEVELS.register("autocontrast", Level(lambda x, m, u, fill, mode: image_ops.autocontrast(x)))
LEVELS.register("equalize", Level(lambda x, m, u, fill, mode: image_ops.equalize(x)))
LEVELS.register("invert", Level(lambda x, m, u, fill, mode: image_ops.invert(x)))
LEVELS.register("rotate", _geometric(image_ops.rotate, lambda x: 30.0))  # degrees
LEVELS.register("shear_x", _geometric(image_ops.shear_x, lambda x: 0.3))
LEVELS.register("shear_y", _geometric(image_ops.shear_y, lambda x: 0.3))
LEVELS.register("translate_x", _geometric(image_ops.translate_x, lambda x: 0.45 * _width(x)))
LEVELS.register("translate_y", _geometric(image_ops.translate_y, lambda x: 0.45 * _height(x)))
LEVELS.register("solarize", Level(
    lambda x, m, u, fill, mode: image_ops.solarize(x, 256.0 * (1.0 - m))))
LEVELS.register("solarize_add", Level(
    lambda x, m, u, fill, mode: image_ops.solarize_add(x, 110.0 * m)))
LEVELS.register("posterize", Level(
    lambda x, m, u, fill, mode: image_ops.posterize(x, 8.0 - 4.0 * m)))
LEVELS.register("color", _enhance(image_ops.color))
LEVELS.register("contrast", _enhance(image_ops.contrast))
LEVELS.register("brightness", _enhance(image_ops.brightness))
LEVELS.register("sharpness", _enhance(image_ops.sharpness))
LEVELS.register("cutout", Level(_cutout))

# The RandAugment paper's 14 transformations.
RANDAUGMENT_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color",
                   "posterize", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                   "translate_x", "translate_y")
# AugMix leaves out the ops that overlap ImageNet-C's corruptions; `all_ops` adds them back.
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
              "translate_x", "translate_y")
AUGMIX_ALL_OPS = AUGMIX_OPS + ("color", "contrast", "brightness", "sharpness")


def check_ops(names: Sequence[str], where: str = "ops") -> tuple:
  """`names` as a tuple; a ValueError (the registry's line) for an unknown one, or for none."""
  if not names:
    raise ValueError(f"{where}: none given (known: {', '.join(LEVELS.names())})")
  for name in names:
    if name not in LEVELS:
      raise ValueError(LEVELS.unknown(name, where))
  return tuple(names)


def apply_level(name, images, magnitude, uniforms, fill=128.0, fill_mode="constant"):
  """Op `name` at per-image `magnitude` (N,); uniforms[:, 0] < 0.5 flips a signed op's sign."""
  level = LEVELS.get(name)
  if level.signed:
    magnitude = tf.where(uniforms[:, 0] < 0.5, -magnitude, magnitude)
  return level.apply(images, magnitude, uniforms, fill, fill_mode)


def apply_chosen(names, choice, images, magnitude, uniforms, fill, fill_mode):
  """Applies op `names[choice[i]]` to image i: each op runs once, on the images that chose it."""
  choice = tf.cast(choice, tf.int32)
  positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), choice, len(names))
  outputs = []
  for name, where in zip(names, positions):
    outputs.append(apply_level(name, tf.gather(images, where), tf.gather(magnitude, where),
                               tf.gather(uniforms, where), fill, fill_mode))
  return tf.dynamic_stitch(positions, outputs)


def _index(u, count):
  """A uniform draw in [0, 1) as an integer in [0, count)."""
  return tf.minimum(tf.cast(u * count, tf.int32), count - 1)


def randaugment_uniforms(num_ops: int) -> int:
  return num_ops * (2 + OP_UNIFORMS)


def randaugment(images, uniforms, *, num_ops=2, magnitude=0.5, magnitude_std=0.0,
                random_magnitude=False, names=RANDAUGMENT_OPS, fill=128.0, fill_mode="constant"):
  """`num_ops` ops in a row, each chosen uniformly per image, at `magnitude` (plus Gaussian noise of
  std `magnitude_std` per image and op, clipped to [0, 1], as timm's `mstd`), or with
  `random_magnitude` at a magnitude uniform in [0, magnitude] per image and op (Keras's
  RandAugment, whose `factor` bounds each op's random strength)."""
  per_op = 2 + OP_UNIFORMS
  images = tf.cast(images, tf.float32)
  for k in range(num_ops):
    u = uniforms[:, k * per_op:(k + 1) * per_op]
    level = tf.fill(tf.shape(u[:, 0]), float(magnitude))
    if random_magnitude:
      level = u[:, 1] * magnitude
    elif magnitude_std > 0:
      noise = tf.math.ndtri(tf.clip_by_value(u[:, 1], 1e-6, 1.0 - 1e-6)) * magnitude_std
      level = tf.clip_by_value(level + noise, 0.0, 1.0)
    images = apply_chosen(names, _index(u[:, 0], len(names)), images, level, u[:, 2:], fill,
                          fill_mode)
  return images


_MAX_AUGMIX_DEPTH = 3


def augmix_uniforms(width: int) -> int:
  return width * (1 + _MAX_AUGMIX_DEPTH * (2 + OP_UNIFORMS))


def augmix_gamma_alphas(width: int, alpha: float) -> tuple:
  """Gamma(alpha) draws: `width` for the Dirichlet chain weights, 2 for the Beta blend."""
  return (float(alpha),) * (width + 2)


def augmix(images, uniforms, gammas, *, severity=0.3, width=3, depth=-1, names=AUGMIX_OPS,
           fill=128.0, fill_mode="constant"):
  """AugMix: `width` chains of `depth` ops (-1: 1 to 3 per chain and image), each op at a magnitude
  uniform in [0, severity]; chains mixed with Dirichlet(alpha) weights, the mix blended with the
  image by m ~ Beta(alpha, alpha): out = (1 - m) * image + m * sum_i w_i chain_i(image).

  All chains of all images go through each step together, as one batch of N * width.
  """
  n = tf.shape(images)[0]
  images = tf.cast(images, tf.float32)
  per_step = 2 + OP_UNIFORMS
  per_chain = 1 + _MAX_AUGMIX_DEPTH * per_step
  # Chain-major rows: row c * N + i is chain c of image i.
  rows = tf.concat([uniforms[:, c * per_chain:(c + 1) * per_chain] for c in range(width)], 0)
  chains = tf.tile(images, [width, 1, 1, 1])
  chain_depth = (1 + _index(rows[:, 0], _MAX_AUGMIX_DEPTH) if depth < 0
                 else tf.fill([n * width], min(int(depth), _MAX_AUGMIX_DEPTH)))
  names = tuple(names) + ("identity",)  # the last choice: this chain has ended
  for step in range(min(_MAX_AUGMIX_DEPTH, depth if depth > 0 else _MAX_AUGMIX_DEPTH)):
    u = rows[:, 1 + step * per_step:1 + (step + 1) * per_step]
    choice = tf.where(step < chain_depth, _index(u[:, 0], len(names) - 1), len(names) - 1)
    chains = apply_chosen(names, choice, chains, severity * u[:, 1], u[:, 2:], fill, fill_mode)
  chains = tf.reshape(chains, tf.concat([[width, n], tf.shape(images)[1:]], 0))
  weights, blend = augmix_mixing_weights(gammas, width)
  # A sum of products: tf.einsum's transposes make it five times slower here.
  mixed = tf.add_n([chains[c] * tf.reshape(weights[:, c], [-1, 1, 1, 1]) for c in range(width)])
  return images + tf.reshape(blend, [-1, 1, 1, 1]) * (mixed - images)


def augmix_mixing_weights(gammas, width: int):
  """Per image: Dirichlet chain weights (N, width) and the Beta blend (N,), from Gamma draws."""
  # Gamma draws of a small alpha can underflow to 0: keep the divisions finite.
  weights = gammas[:, :width] / tf.maximum(
      tf.reduce_sum(gammas[:, :width], axis=1, keepdims=True), 1e-30)
  blend = gammas[:, width] / tf.maximum(gammas[:, width] + gammas[:, width + 1], 1e-30)
  return weights, blend
