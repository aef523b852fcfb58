"""Distribution shifts of microscope images as batched TensorFlow ops.

Each shift changes what another microscope, camera, stain batch or slide would change:
illumination, contrast, colour and stain, focus, sensor noise, compression, resolution,
magnification and occlusion. A shift takes a batch (N, H, W, 3), float32 in [0, 255]
or uint8, a strength per image in [0, 1] and per-image uniforms that place its random
parts (directions, positions, noise seeds); it returns float32 in [0, 255]. Strength 0
leaves an image as it is, strength 1 is the severest level of the robustness benchmark,
still recognisable to a person, and the benchmark's severities 1..5 are strengths
0.2 .. 1.0. Sizes in pixels are given for 96 x 96 images and scale with the image.

The same ops serve the benchmark (`bloodcell_jax.robustness`, fixed strength and
seeds) and training (the `shifts`, `hed_jitter` and `scale_jitter` augmentation ops,
random strength per image).
"""

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from bloodcell_jax.augment import image_ops
from bloodcell_jax.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)


def strength_of(severity: int) -> float:
  return severity / SEVERITIES[-1]


@dataclasses.dataclass(frozen=True)
class Shift:
  name: str
  family: str
  apply: Callable  # (images float32, strength (N,), uniforms (N, num_uniforms)) -> images
  num_uniforms: int = 0
  description: str = ""


SHIFTS = Registry("shift")


def register(name: Optional[str] = None, *, family: str, num_uniforms: int = 0):
  """Decorator registering `fn(images, strength, uniforms)` as a shift of `family` that takes
  `num_uniforms` uniforms per image, under `name` (default: the function's name without its
  leading underscore); the docstring is its description."""
  def decorator(fn):
    shift_name = name or fn.__name__.lstrip("_")
    SHIFTS.register(shift_name, Shift(shift_name, family, fn, num_uniforms,
                                      (fn.__doc__ or "").strip()))
    return fn
  return decorator


def families() -> Dict[str, Tuple[str, ...]]:
  """Family name -> its shifts, in table order."""
  out: Dict[str, Tuple[str, ...]] = {}
  for _, shift in SHIFTS.items():
    out[shift.family] = out.get(shift.family, ()) + (shift.name,)
  return out


def apply(name: str, images, strength, uniforms):
  """Shift `name` at `strength` (a number or (N,)) with per-image `uniforms` (N, >= its count)."""
  shift = SHIFTS.get(name)
  images = tf.cast(images, tf.float32)
  strength = tf.broadcast_to(tf.cast(strength, tf.float32), tf.shape(images)[:1])
  uniforms = tf.cast(uniforms, tf.float32)[:, :shift.num_uniforms]
  return tf.clip_by_value(shift.apply(images, strength, uniforms), 0.0, 255.0)


def apply_chosen(names, choice, images, strength, uniforms):
  """Shift `names[choice[i]]` on image i: each shift runs once, on the images that chose it."""
  positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), tf.cast(choice, tf.int32),
                                   len(names))
  outputs = [apply(name, tf.gather(images, where), tf.gather(strength, where),
                   tf.gather(uniforms, where)) for name, where in zip(names, positions)]
  return tf.dynamic_stitch(positions, outputs)


def max_uniforms(names=None) -> int:
  return max(SHIFTS.get(n).num_uniforms for n in (names or SHIFTS.names()))


# Helpers ---------------------------------------------------------------------------------

def _col(values):
  """(N,) -> (N, 1, 1, 1)."""
  return tf.reshape(values, [-1, 1, 1, 1])


def _sign(u):
  return tf.where(u < 0.5, -1.0, 1.0)


def _scale(images) -> tf.Tensor:
  """Image size relative to the 96 pixels the pixel sizes below are given for."""
  return tf.cast(tf.shape(images)[1], tf.float32) / 96.0


def _grid(images):
  """Pixel-centre coordinates (1, H, W) x and y."""
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  ys, xs = tf.meshgrid(tf.cast(tf.range(height), tf.float32) + 0.5,
                       tf.cast(tf.range(width), tf.float32) + 0.5, indexing="ij")
  return xs[None], ys[None]


def _background(images):
  """Each image's background colour (N, 1, 1, 3): the 80th percentile, per channel, of its
  border pixels. The border of a blood smear image is plasma and red cells, not the
  centred white cell, and the plasma is the brightest of it."""
  border = tf.concat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
  k = tf.shape(border)[1] * 4 // 5
  return tf.sort(border, axis=1)[:, k][:, None, None, :]


def _luma(images):
  return image_ops.grayscale(images)


def _seeds(u):
  """Two uniforms per image as stateless seeds (N, 2)."""
  return tf.cast(tf.floor(u * 2147483647.0), tf.int64)


def _per_image_normal(images, u):
  """Standard normal noise shaped like `images`, seeded per image by two uniforms."""
  shape = tf.shape(images)[1:]
  return tf.map_fn(lambda seed: tf.random.stateless_normal(shape, seed), _seeds(u),
                   fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32))


def _shifted_sum(images, weights, radius: int):
  """sum over offsets (dy, dx) in [-radius, radius]^2 of weights[n, dy, dx] * image shifted
  by (dy, dx), edges reflected: a blur with its own kernel per image."""
  size = 2 * radius + 1
  padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  out = tf.zeros_like(images)
  for dy in range(size):
    for dx in range(size):
      window = padded[:, dy:dy + height, dx:dx + width]
      out += _col(weights[:, dy, dx]) * window
  return out


def _kernel_radius(images, pixels: float) -> int:
  """The (static) kernel radius that holds a blur of `pixels` at 96 x 96, at this size."""
  if images.shape[1] is None:
    raise ValueError("blur shifts need images of a static size")
  return max(1, math.ceil(pixels * images.shape[1] / 96.0))


def _kernel_offsets(radius: int):
  offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  dy, dx = tf.meshgrid(offsets, offsets, indexing="ij")
  return dx[None], dy[None]  # (1, K, K)


def _normalised(weights):
  return weights / tf.reduce_sum(weights, axis=[1, 2], keepdims=True)


def warp_on_background(images, scale, shift_x, shift_y):
  """Zoom by `scale` about the centre and move by (shift_x, shift_y) pixels; what comes
  from outside the field is the image's background colour."""
  background = _background(images)
  zero = tf.zeros_like(scale)
  moved = image_ops.affine(images - background, zero, scale, shift_x, shift_y, fill=0.0,
                           fill_mode="constant")
  return moved + background


def _disks(images, centres_x, centres_y, radii, edge: float = 1.0):
  """(N, K, H, W) coverage of K soft-edged disks per image (pixel units)."""
  xs, ys = _grid(images)
  distance = tf.sqrt((xs[:, None] - centres_x[..., None, None]) ** 2 +
                     (ys[:, None] - centres_y[..., None, None]) ** 2)
  return tf.clip_by_value((radii[..., None, None] - distance) / edge + 0.5, 0.0, 1.0)


# Illumination ------------------------------------------------------------------------------

@register(family="illumination")
def _brighter(images, s, u):
  """Brighter illumination: intensities times 1 + 0.7 s (saturating at white)."""
  return images * _col(1.0 + 0.7 * s)


@register(family="illumination")
def _dimmer(images, s, u):
  """Dimmer illumination: intensities times 1 - 0.6 s."""
  return images * _col(1.0 - 0.6 * s)


@register(family="illumination", num_uniforms=1)
def _gamma(images, s, u):
  """Another camera response: 255 (x / 255) ^ g, g = 2.2 ^ (+-s), the sign drawn per image."""
  exponent = tf.pow(2.2, _sign(u[:, 0]) * s)
  return 255.0 * tf.pow(images / 255.0, _col(exponent))


@register(family="illumination", num_uniforms=2)
def _vignetting(images, s, u):
  """Uneven illumination: a radial fall-off to 1 - 0.75 s at the far corner, centred off the
  middle by up to a quarter of the image."""
  xs, ys = _grid(images)
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  cx = width * (0.5 + 0.5 * (u[:, 0] - 0.5))
  cy = height * (0.5 + 0.5 * (u[:, 1] - 0.5))
  r2 = (xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2
  far = tf.reduce_max(r2, axis=[1, 2], keepdims=True)
  gain = 1.0 - 0.75 * s[:, None, None] * r2 / far
  return images * gain[..., None]


# Contrast -----------------------------------------------------------------------------------

def _contrast(images, factor):
  mean = tf.reduce_mean(_luma(images), axis=[1, 2, 3], keepdims=True)
  return mean + _col(factor) * (images - mean)


@register(family="contrast")
def _contrast_up(images, s, u):
  """Higher contrast: deviations from the mean grey level times 1 + 1.2 s."""
  return _contrast(images, 1.0 + 1.2 * s)


@register(family="contrast")
def _contrast_down(images, s, u):
  """Lower contrast: deviations from the mean grey level times 1 - 0.7 s."""
  return _contrast(images, 1.0 - 0.7 * s)


# Colour and stain -----------------------------------------------------------------------------

@register(family="colour")
def _saturation(images, s, u):
  """A paler, less saturated stain: blended towards grey, colour times 1 - 0.85 s."""
  return image_ops.blend(_luma(images), images, 1.0 - 0.85 * s)


# RGB -> YIQ; a rotation of the IQ plane turns the hue.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                np.float32)


@register(family="colour", num_uniforms=1)
def _hue(images, s, u):
  """A hue rotation of +-60 s degrees (direction drawn per image)."""
  angle = _sign(u[:, 0]) * s * (60.0 * math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  one, zero = tf.ones_like(cos), tf.zeros_like(cos)
  rotation = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1),
                        [-1, 3, 3])
  to_yiq = tf.constant(_YIQ)
  transform = tf.linalg.inv(to_yiq)[None] @ rotation @ to_yiq[None]  # (N, 3, 3)
  return tf.einsum("nij,nhwj->nhwi", transform, images)


# Ruifrok & Johnston's haematoxylin, eosin and DAB optical densities (rows), as scikit-image.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
                         np.float64)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def hed_perturb(images, alpha, beta):
  """Tellez et al.'s stain perturbation: each image's haematoxylin, eosin and DAB
  concentrations c become alpha * c + beta (alpha, beta: (N, 3)), in optical density."""
  density = -tf.math.log((images + 1.0) / 256.0)
  concentrations = tf.einsum("nhwc,cs->nhws", density, tf.constant(_HED_FROM_RGB, tf.float32))
  concentrations = concentrations * alpha[:, None, None, :] + beta[:, None, None, :]
  density = tf.einsum("nhws,sc->nhwc", concentrations, tf.constant(_RGB_FROM_HED, tf.float32))
  return 256.0 * tf.exp(-density) - 1.0


@register(family="colour", num_uniforms=6)
def _stain(images, s, u):
  """Another stain batch or protocol: haematoxylin and eosin amounts times 1 +- 0.5 s and
  shifted by +-0.1 s optical density, DAB by a third of that, directions drawn per image."""
  limits = tf.constant([1.0, 1.0, 1.0 / 3.0])
  alpha = 1.0 + 0.5 * s[:, None] * limits * _sign(u[:, :3])
  beta = 0.1 * s[:, None] * limits * _sign(u[:, 3:6])
  return hed_perturb(images, alpha, beta)


@register(family="colour", num_uniforms=3)
def _white_balance(images, s, u):
  """Another camera's white balance: each channel's gain exp(+-0.35 s x (0.5 .. 1)) (about
  1.4 at most), drawn per image and channel."""
  log_gain = 0.35 * s[:, None] * (2.0 * u[:, :3] - 1.0)
  return images * tf.exp(log_gain)[:, None, None, :]


# Focus -----------------------------------------------------------------------------------------

@register(family="focus")
def _defocus(images, s, u):
  """Out of focus: a disk blur of radius 3.5 s px."""
  radius = _kernel_radius(images, 4.0)
  dx, dy = _kernel_offsets(radius)
  r = 3.5 * s * _scale(images)
  # A disk whose rim pixels weigh in by how far the radius reaches them, so that the blur
  # grows continuously from the identity at radius 0.
  weights = tf.clip_by_value(r[:, None, None] + 1.0 - tf.sqrt(dx ** 2 + dy ** 2), 0.0, 1.0)
  return _shifted_sum(images, _normalised(weights), radius)


_LINE_SAMPLES = 17


@register(family="focus", num_uniforms=1)
def _motion_blur(images, s, u):
  """Stage or camera motion: a line blur 8 s px long at an angle drawn per image (the
  line's points spread over the pixel grid bilinearly)."""
  radius = _kernel_radius(images, 4.0)
  dx, dy = _kernel_offsets(radius)
  angle = u[:, 0] * math.pi
  half = 4.0 * s * _scale(images)
  t = half[:, None] * tf.linspace(-1.0, 1.0, _LINE_SAMPLES)[None]  # (N, T) along the line
  px = (t * tf.cos(angle)[:, None])[..., None, None]  # (N, T, 1, 1)
  py = (t * tf.sin(angle)[:, None])[..., None, None]
  tent = lambda d: tf.maximum(1.0 - tf.abs(d), 0.0)
  weights = tf.reduce_mean(tent(dx[:, None] - px) * tent(dy[:, None] - py), axis=1)
  return _shifted_sum(images, _normalised(weights), radius)


# Sensor noise ----------------------------------------------------------------------------------

@register(family="noise", num_uniforms=2)
def _gaussian_noise(images, s, u):
  """Read-out noise: Gaussian with a standard deviation of 24 s grey levels."""
  return images + _col(24.0 * s) * _per_image_normal(images, u)


@register(family="noise", num_uniforms=2)
def _shot_noise(images, s, u):
  """Photon (shot) noise: variance proportional to the intensity, a standard deviation of
  40 s grey levels at white (Gaussian approximation of Poisson counts)."""
  sigma = tf.sqrt(tf.maximum(images, 0.0) / 255.0) * _col(40.0 * s)
  return images + sigma * _per_image_normal(images, u)


# Compression and resolution ----------------------------------------------------------------------

@register(family="compression")
def _jpeg(images, s, u):
  """JPEG compression at quality 90 - 82 s (8 at the severest); strength 0 leaves the image."""
  quality = tf.cast(tf.round(90.0 - 82.0 * s), tf.int32)

  def encode(args):
    image, q = args
    return tf.cast(tf.image.adjust_jpeg_quality(image, q), tf.float32)
  compressed = tf.map_fn(encode, (image_ops.as_uint8(images), quality),
                         fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32))
  return tf.where(_col(s) > 0.0, compressed, images)


def _resampled(images, factor, down_method, up_method):
  """Each image down to its size / factor[n] and back up."""
  size = tf.shape(images)[1:3]

  def one(args):
    image, f = args
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) / f), tf.int32), 1)
    low = tf.image.resize(image[None], small, method=down_method, antialias=True)
    return tf.image.resize(low, size, method=up_method)[0]
  out = tf.map_fn(one, (images, factor),
                  fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32))
  return tf.where(_col(factor) > 1.0, out, images)


@register(family="resolution")
def _pixelate(images, s, u):
  """A coarser sensor: blocks of 1 + 3 s pixels (area down, nearest up)."""
  return _resampled(images, 1.0 + 3.0 * s, "area", "nearest")


@register(family="resolution")
def _downscale(images, s, u):
  """Lower optical resolution: down by 1 + 3 s and bilinearly back up."""
  return _resampled(images, 1.0 + 3.0 * s, "bilinear", "bilinear")


# Magnification and framing ----------------------------------------------------------------------

@register(family="magnification", num_uniforms=2)
def _zoom_in(images, s, u):
  """Higher magnification: the cell at 1 + s times its size (2x at the severest), centre
  jittered by up to 5% of the image."""
  size = tf.cast(tf.shape(images)[1], tf.float32)
  return warp_on_background(images, 1.0 + s, (u[:, 0] - 0.5) * 0.1 * size * s,
                             (u[:, 1] - 0.5) * 0.1 * size * s)


@register(family="magnification", num_uniforms=2)
def _zoom_out(images, s, u):
  """Lower magnification: the cell at 1 / (1 + s) of its size (0.5x at the severest), the
  field around it filled with the background colour."""
  size = tf.cast(tf.shape(images)[1], tf.float32)
  return warp_on_background(images, 1.0 / (1.0 + s), (u[:, 0] - 0.5) * 0.1 * size * s,
                             (u[:, 1] - 0.5) * 0.1 * size * s)


@register(family="magnification", num_uniforms=1)
def _off_centre(images, s, u):
  """The cell off centre by 30 s % of the image, in a direction drawn per image."""
  size = tf.cast(tf.shape(images)[1], tf.float32)
  angle = u[:, 0] * 2.0 * math.pi
  distance = 0.3 * s * size
  return warp_on_background(images, tf.ones_like(s), distance * tf.cos(angle),
                             distance * tf.sin(angle))


# Occlusion ----------------------------------------------------------------------------------------

_DEPOSITS = 16


@register(family="occlusion", num_uniforms=3 * _DEPOSITS)
def _stain_deposits(images, s, u):
  """Stain precipitate: up to 16 dark violet specks of radius 1 to 2.5 px (16 s of them)."""
  u = tf.reshape(u, [-1, _DEPOSITS, 3])
  size = tf.cast(tf.shape(images)[1], tf.float32)
  active = tf.cast(tf.range(_DEPOSITS, dtype=tf.float32)[None] < tf.round(s * _DEPOSITS)[:, None],
                   tf.float32)
  coverage = _disks(images, u[..., 0] * size, u[..., 1] * size,
                    (1.0 + 1.5 * u[..., 2]) * _scale(images)) * active[..., None, None]
  mask = 1.0 - tf.reduce_prod(1.0 - 0.9 * coverage, axis=1)
  return images + mask[..., None] * (tf.constant([70.0, 40.0, 90.0]) - images)


_DEBRIS = 5


@register(family="occlusion", num_uniforms=5 * _DEBRIS)
def _debris(images, s, u):
  """Dust and debris: up to 5 dark grey-brown elongated particles, 3 to 8 px long radius,
  their number and size growing with s."""
  u = tf.reshape(u, [-1, _DEBRIS, 5])
  size = tf.cast(tf.shape(images)[1], tf.float32)
  xs, ys = _grid(images)
  active = tf.cast(tf.range(_DEBRIS, dtype=tf.float32)[None] < tf.math.ceil(s * _DEBRIS)[:, None],
                   tf.float32)
  angle = u[..., 2] * math.pi
  long_radius = (3.0 + 5.0 * u[..., 3]) * _scale(images) * (0.5 + 0.5 * s[:, None])
  short_radius = long_radius * (0.3 + 0.4 * u[..., 4])
  dx = xs[:, None] - (u[..., 0] * size)[..., None, None]
  dy = ys[:, None] - (u[..., 1] * size)[..., None, None]
  cos, sin = tf.cos(angle)[..., None, None], tf.sin(angle)[..., None, None]
  along = (dx * cos + dy * sin) / long_radius[..., None, None]
  across = (-dx * sin + dy * cos) / short_radius[..., None, None]
  inside = tf.clip_by_value((1.0 - tf.sqrt(along ** 2 + across ** 2)) *
                            short_radius[..., None, None] + 0.5, 0.0, 1.0)
  mask = 1.0 - tf.reduce_prod(1.0 - 0.85 * inside * active[..., None, None], axis=1)
  return images + mask[..., None] * (tf.constant([60.0, 50.0, 40.0]) - images)


_BUBBLES = 3


@register(family="occlusion", num_uniforms=3 * _BUBBLES)
def _air_bubbles(images, s, u):
  """Air bubbles in the mounting medium: up to 3 circles of radius 6 to 18 px with a dark
  rim and a brighter inside (ceil(3 s) of them, growing with s)."""
  u = tf.reshape(u, [-1, _BUBBLES, 3])
  size = tf.cast(tf.shape(images)[1], tf.float32)
  active = tf.cast(tf.range(_BUBBLES, dtype=tf.float32)[None] < tf.math.ceil(s * _BUBBLES)[:, None],
                   tf.float32)[..., None, None]
  radius = (6.0 + 12.0 * u[..., 2] * s[:, None]) * _scale(images)
  inside = _disks(images, u[..., 0] * size, u[..., 1] * size, radius) * active
  core = _disks(images, u[..., 0] * size, u[..., 1] * size, radius - 2.0 * _scale(images)) * active
  rim = tf.reduce_max(inside - core, axis=1)[..., None]
  core = tf.reduce_max(core, axis=1)[..., None]
  brighter = images + core * (0.25 * (255.0 - images))
  return brighter + 0.8 * rim * (tf.constant([45.0, 45.0, 55.0]) - brighter)


@register(family="occlusion", num_uniforms=1)
def _cut_edge(images, s, u):
  """The field stop or the slide's edge: a dark band over 35 s % of the image from one side
  (drawn per image)."""
  xs, ys = _grid(images)
  size = tf.cast(tf.shape(images)[1], tf.float32)
  side = tf.cast(tf.minimum(tf.floor(u[:, 0] * 4.0), 3.0), tf.int32)
  distance = tf.stack([xs[0], size - xs[0], ys[0], size - ys[0]])  # from left, right, top, bottom
  band = tf.gather(distance, side) < (0.35 * s * size)[:, None, None]
  return tf.where(band[..., None], tf.constant([20.0, 20.0, 20.0]), images)
