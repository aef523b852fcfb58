"""Image augmentation as TensorFlow ops, configured by a pipeline string.

A pipeline is a '|'-separated list of ops with keyword arguments, e.g.
`flip|affine(rotate=0.1, translate=0.1, zoom=0.1)|brightness(0.2)`; an empty
string is the identity. Every op maps one float32 image in [0, 255] and a
stateless seed (shape [2]) to an image of the same shape, so each image gets its
own random draw and the same seed always gives the same output.
"""

import ast
import math
from typing import Callable, Dict

import tensorflow as tf

from bloodcell_jax.errors import UserError

Op = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
_REGISTRY: Dict[str, Callable[..., Op]] = {}


def register(name: str):
  def decorator(factory):
    _REGISTRY[name] = factory
    return factory
  return decorator


def parse(spec: str, where: str = "augmentation") -> Op:
  """Builds the composed op from a pipeline string; errors name the bad part."""
  ops = [_parse_op(part.strip(), where) for part in spec.split("|") if part.strip()]

  def pipeline(image, seed):
    for k, op in enumerate(ops):
      image = op(image, tf.random.experimental.stateless_fold_in(seed, k))
    return tf.clip_by_value(image, 0.0, 255.0)
  return pipeline


def _parse_op(text: str, where: str) -> Op:
  try:
    call = ast.parse(text, mode="eval").body
    if isinstance(call, ast.Name):
      name, args, kwargs = call.id, [], {}
    elif isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
      name = call.func.id
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    else:
      raise ValueError("expected name or name(arg=value, ...)")
  except (SyntaxError, ValueError) as e:
    raise UserError(f"{where}: cannot parse op '{text}' ({e})") from None
  if name not in _REGISTRY:
    raise UserError(f"{where}: unknown op '{name}' (known: {', '.join(sorted(_REGISTRY))})")
  try:
    return _REGISTRY[name](*args, **kwargs)
  except TypeError as e:
    raise UserError(f"{where}: bad arguments for '{name}': {e}") from None


def _uniform(seed, low, high, shape=()):
  return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


@register("flip")
def flip(horizontal: bool = True, vertical: bool = True) -> Op:
  """Random horizontal and/or vertical flips, each with probability 1/2."""
  def op(image, seed):
    coins = _uniform(seed, 0.0, 1.0, [2])
    if horizontal:
      image = tf.where(coins[0] < 0.5, tf.reverse(image, [1]), image)
    if vertical:
      image = tf.where(coins[1] < 0.5, tf.reverse(image, [0]), image)
    return image
  return op


@register("affine")
def affine(rotate: float = 0.0, translate: float = 0.0, zoom: float = 0.0,
           fill_mode: str = "reflect", fill_value: float = 0.0,
           interpolation: str = "bilinear") -> Op:
  """Rotation, translation and zoom about the centre in one resampling.

  Keras's conventions: `rotate` is a fraction of a full turn (0.1 = up to 36
  degrees either way), `translate` a fraction of the image size, `zoom` the
  largest relative change of scale.
  """
  if fill_mode.upper() not in ("REFLECT", "WRAP", "CONSTANT", "NEAREST"):
    raise TypeError(f"fill_mode={fill_mode.lower()!r}, expected reflect, wrap, constant or nearest")

  def op(image, seed):
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    draws = _uniform(seed, -1.0, 1.0, [4])
    return apply_affine(image, angle=draws[0] * rotate * 2.0 * math.pi,
                        scale=1.0 + draws[1] * zoom, shift_x=draws[2] * translate * width,
                        shift_y=draws[3] * translate * height, fill_mode=fill_mode,
                        fill_value=fill_value, interpolation=interpolation)
  return op


def apply_affine(image, *, angle, scale=1.0, shift_x=0.0, shift_y=0.0, fill_mode="REFLECT",
                 fill_value=0.0, interpolation="bilinear"):
  """Rotates by `angle` (radians, counter-clockwise on screen), scales about the
  centre, then shifts by (shift_x, shift_y) pixels, in one resampling."""
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
  cos = tf.cos(tf.cast(angle, tf.float32)) / scale
  sin = tf.sin(tf.cast(angle, tf.float32)) / scale
  # ImageProjectiveTransform maps each output pixel to the input pixel it samples:
  # input = R^-1 S^-1 (output - centre - shift) + centre, with R in image (y-down) axes.
  ox, oy = cx + shift_x, cy + shift_y
  transform = tf.stack([cos, -sin, cx - cos * ox + sin * oy,
                        sin, cos, cy - sin * ox - cos * oy, 0.0, 0.0])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=fill_value, interpolation=interpolation.upper(),
      fill_mode=fill_mode.upper())[0]


@register("brightness")
def brightness(delta: float) -> Op:
  """Adds a random offset in [-delta, delta] x 255."""
  def op(image, seed):
    return image + _uniform(seed, -delta, delta) * 255.0
  return op


@register("contrast")
def contrast(factor: float) -> Op:
  """Scales deviations from the per-channel mean by a factor in [1 - f, 1 + f]."""
  def op(image, seed):
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    return (image - mean) * _uniform(seed, 1.0 - factor, 1.0 + factor) + mean
  return op


@register("identity")
def identity() -> Op:
  return lambda image, seed: image
