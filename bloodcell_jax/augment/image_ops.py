"""Image operations of RandAugment and AugMix as batched TensorFlow ops.

Every op takes a batch `images` (N, H, W, C), float32 in [0, 255] or uint8, and
per-image parameters of shape (N,), and returns a batch of the same shape and
dtype. Any image size works. Semantics follow PIL (ImageOps, ImageEnhance and
Image.transform), which the papers' reference code uses; one deliberate
difference from the TF/big_vision ops: `contrast` blends with the image's mean
intensity, not with a histogram count.

Ops defined on integer levels (equalize, posterize) round float input to the
nearest level first, as if the image had been stored as uint8 like PIL's.
Geometric ops resample bilinearly about the image centre; pixels that come from
outside the image are `fill` (or follow `fill_mode`: reflect, wrap, nearest).

Selections are written as arithmetic (`a + mask * (b - a)`): TensorFlow's select
kernel is several times slower than a multiply-add on CPU.
"""

import functools
import math

import tensorflow as tf

# ITU-R 601-2 luma, as PIL's convert("L").
_LUMA = (0.299, 0.587, 0.114)


def keeps_dtype(op):
  """Runs `op` in float32 and returns the input's dtype (uint8 rounded and clipped)."""
  @functools.wraps(op)
  def wrapped(images, *args, **kwargs):
    dtype = images.dtype
    out = op(tf.cast(images, tf.float32), *args, **kwargs)
    if dtype == tf.uint8:
      return as_uint8(out)
    return tf.cast(out, dtype)
  return wrapped


def as_uint8(images):
  """Integer levels of uint8 or float images (floats rounded to the nearest level, clipped)."""
  if images.dtype == tf.uint8:
    return images
  return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)


def _per_image(values):
  """(N,) parameters (or a scalar) shaped to broadcast against (N, H, W, C) images."""
  return tf.reshape(tf.cast(values, tf.float32), [-1, 1, 1, 1])


def blend(degenerate, images, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped to [0, 255]."""
  return tf.clip_by_value(degenerate + _per_image(factor) * (images - degenerate),
                          0.0, 255.0)


def grayscale(images):
  """Luma (N, H, W, 1) of RGB images; single-channel images are returned as they are."""
  if images.shape[-1] == 1:
    return images
  return tf.tensordot(images, tf.constant(_LUMA), axes=[[3], [0]])[..., None]


def invert(images):
  return tf.cast(255, images.dtype) - images


@keeps_dtype
def autocontrast(images):
  """Stretches each channel so its darkest pixel is 0 and its brightest 255 (ImageOps.autocontrast).

  A channel with a single value is left as it is.
  """
  low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
  high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
  spread = high - low
  scale = tf.math.divide_no_nan(255.0, spread) + tf.cast(spread <= 0.0, tf.float32)
  offset = low * tf.cast(spread > 0.0, tf.float32)
  return tf.clip_by_value((images - offset) * scale, 0.0, 255.0)


def equalize(images):
  """Histogram equalisation of each channel on integer levels, with PIL's lookup table.

  PIL (ImageOps.equalize): step = (pixels - count of the top level) // 255;
  level v maps to (pixels below v + step // 2) // step; step 0 leaves the channel.
  """
  levels = tf.cast(as_uint8(images), tf.int32)
  shape = tf.shape(levels)
  n, channels = shape[0], shape[3]
  # One histogram per (image, channel), from a single bincount over offset levels.
  slot = tf.reshape(tf.range(n * channels), [n, 1, 1, channels]) * 256
  bins = slot + levels
  hist = tf.reshape(tf.math.bincount(tf.reshape(bins, [-1]), minlength=n * channels * 256,
                                     maxlength=n * channels * 256), [n * channels, 256])
  top = 255 - tf.argmax(tf.cast(tf.reverse(hist, [1]) > 0, tf.int32), axis=1, output_type=tf.int32)
  top_count = tf.gather(hist, top, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - top_count) // 255
  below = tf.cumsum(hist, axis=1, exclusive=True)
  safe_step = tf.maximum(step, 1)[:, None]
  lut = tf.minimum((below + safe_step // 2) // safe_step, 255)
  lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
  return tf.cast(tf.gather(tf.reshape(lut, [-1]), bins), images.dtype)


def posterize(images, bits):
  """Keeps the top `bits` (1..8, per image) bits of each integer level (ImageOps.posterize)."""
  bits = tf.cast(tf.clip_by_value(tf.round(tf.cast(bits, tf.float32)), 1.0, 8.0), tf.int32)
  mask = tf.cast(tf.reshape(256 - tf.bitwise.left_shift(1, 8 - bits), [-1, 1, 1, 1]), tf.uint8)
  return tf.cast(tf.bitwise.bitwise_and(as_uint8(images), mask), images.dtype)


@keeps_dtype
def solarize(images, threshold):
  """Inverts levels at or above `threshold` (ImageOps.solarize); 256 leaves the image."""
  flipped = tf.cast(images >= _per_image(threshold), tf.float32)
  return images + flipped * (255.0 - 2.0 * images)


@keeps_dtype
def solarize_add(images, addition, threshold=128.0):
  """Adds `addition` to levels below `threshold`, clipped to 255."""
  below = tf.cast(images < threshold, tf.float32)
  return images + below * tf.minimum(_per_image(addition), 255.0 - images)


@keeps_dtype
def color(images, factor):
  """Saturation (ImageEnhance.Color): blend with the grayscale image; 1 = unchanged."""
  return blend(grayscale(images), images, factor)


@keeps_dtype
def contrast(images, factor):
  """Contrast (ImageEnhance.Contrast): blend with the image's mean intensity; 1 = unchanged."""
  mean = tf.reduce_mean(grayscale(images), axis=[1, 2, 3], keepdims=True)
  return blend(mean, images, factor)


@keeps_dtype
def brightness(images, factor):
  """Brightness (ImageEnhance.Brightness): blend with black; 1 = unchanged."""
  return blend(tf.zeros_like(images), images, factor)


@keeps_dtype
def sharpness(images, factor):
  """Sharpness (ImageEnhance.Sharpness): blend with PIL's SMOOTH filter, borders kept."""
  channels = images.shape[-1]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME")  # border replaced below
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
  inside = tf.cast(inside, tf.float32)[None, :, :, None]
  degenerate = images + inside * (smooth - images)
  return blend(degenerate, images, factor)


def _resample(images, inverse, fill, fill_mode, interpolation):
  """Samples output pixel (x, y) at input `inverse @ (x, y, 1)` (pixel-centre coordinates)."""
  n = tf.shape(images)[0]
  transforms = tf.concat([tf.reshape(inverse, [n, 6]), tf.zeros([n, 2])], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
      fill_value=tf.cast(fill, tf.float32), interpolation=interpolation.upper(),
      fill_mode=fill_mode.upper())


def _centre(images):
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  return (width - 1.0) / 2.0, (height - 1.0) / 2.0


def _about_centre(images, a, b, d, e):
  """The inverse map x_in = a x + b y, y_in = d x + e y relative to the centre, as 2x3 rows."""
  cx, cy = _centre(images)
  return tf.stack([a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy], axis=1)


@keeps_dtype
def rotate(images, degrees, fill=128.0, fill_mode="constant", interpolation="bilinear"):
  """Rotates counter-clockwise (as PIL's Image.rotate) by `degrees` about the centre."""
  angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _resample(images, _about_centre(images, cos, -sin, sin, cos), fill, fill_mode,
                   interpolation)


def _shift_rows(images, offsets, fill):
  """Row y of image n takes the input row at x + offsets[n, y] (bilinear; outside: fill).

  One crop_and_resize box per row: three times faster than the projective transform,
  whose kernel recomputes the full mapping for every output value.
  """
  shape = tf.shape(images)
  n, height, width = shape[0], shape[1], shape[2]
  rows = tf.cast(tf.range(height), tf.float32)
  y = tf.tile(rows[None, :] / tf.cast(tf.maximum(height - 1, 1), tf.float32), [n, 1])
  x = offsets / tf.cast(tf.maximum(width - 1, 1), tf.float32)
  boxes = tf.reshape(tf.stack([y, x, y, x + 1.0], axis=-1), [-1, 4])
  # A static crop size where the width is known keeps grappler's cost model quiet.
  crop_width = images.shape[2] if images.shape[2] is not None else width
  out = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes,
                                 tf.repeat(tf.range(n), height), [1, crop_width],
                                 extrapolation_value=float(fill))
  return tf.reshape(out, tf.concat([[n, height, width], shape[3:]], 0))


def _shift_columns(images, offsets, fill):
  """Column x of image n takes the input column at y + offsets[n, x]."""
  transposed = tf.transpose(images, [0, 2, 1, 3])
  return tf.transpose(_shift_rows(transposed, offsets, fill), [0, 2, 1, 3])


def _axis_offsets(images, axis, slope, shift):
  """Per image and row (axis 1) or column (axis 2): slope * (index - centre) + shift."""
  size = tf.shape(images)[axis]
  index = tf.cast(tf.range(size), tf.float32) - (tf.cast(size, tf.float32) - 1.0) / 2.0
  slope = tf.cast(slope, tf.float32)[:, None]
  return slope * index[None, :] + tf.cast(shift, tf.float32)[:, None]


@keeps_dtype
def _sheared_or_shifted(images, axis, slope, shift, fill, fill_mode, interpolation):
  """Rows (axis 1) or columns (axis 2) each moved along the other axis, with a constant fill by
  crop_and_resize, any other fill mode or interpolation by the projective transform."""
  if fill_mode == "constant" and interpolation == "bilinear":
    offsets = _axis_offsets(images, axis, slope, shift)
    return (_shift_rows if axis == 1 else _shift_columns)(images, offsets, fill)
  one = tf.ones_like(slope, tf.float32)
  zero = tf.zeros_like(slope, tf.float32)
  if axis == 1:
    inverse = _about_centre(images, one, slope, zero, one)
    inverse += tf.stack([zero, zero, shift, zero, zero, zero], axis=1)
  else:
    inverse = _about_centre(images, one, zero, slope, one)
    inverse += tf.stack([zero, zero, zero, zero, zero, shift], axis=1)
  return _resample(images, inverse, fill, fill_mode, interpolation)


def shear_x(images, factor, fill=128.0, fill_mode="constant", interpolation="bilinear"):
  """Shears rows: output (x, y) takes input (x + factor * (y - centre), y)."""
  factor = tf.cast(factor, tf.float32)
  return _sheared_or_shifted(images, 1, factor, tf.zeros_like(factor), fill, fill_mode,
                             interpolation)


def shear_y(images, factor, fill=128.0, fill_mode="constant", interpolation="bilinear"):
  """Shears columns: output (x, y) takes input (x, y + factor * (x - centre))."""
  factor = tf.cast(factor, tf.float32)
  return _sheared_or_shifted(images, 2, factor, tf.zeros_like(factor), fill, fill_mode,
                             interpolation)


def translate_x(images, pixels, fill=128.0, fill_mode="constant", interpolation="bilinear"):
  """Moves the content `pixels` to the right (negative: left)."""
  pixels = tf.cast(pixels, tf.float32)
  return _sheared_or_shifted(images, 1, tf.zeros_like(pixels), -pixels, fill, fill_mode,
                             interpolation)


def translate_y(images, pixels, fill=128.0, fill_mode="constant", interpolation="bilinear"):
  """Moves the content `pixels` down (negative: up)."""
  pixels = tf.cast(pixels, tf.float32)
  return _sheared_or_shifted(images, 2, tf.zeros_like(pixels), -pixels, fill, fill_mode,
                             interpolation)


@keeps_dtype
def affine(images, angle, scale, shift_x, shift_y, fill=0.0, fill_mode="reflect",
           interpolation="bilinear"):
  """Rotation by `angle` (radians, counter-clockwise), scaling about the centre, then a shift in
  pixels, in one resampling; every parameter has shape (N,)."""
  cos = tf.cos(angle) / scale
  sin = tf.sin(angle) / scale
  cx, cy = _centre(images)
  ox, oy = cx + shift_x, cy + shift_y
  inverse = tf.stack([cos, -sin, cx - cos * ox + sin * oy,
                      sin, cos, cy - sin * ox - cos * oy], axis=1)
  return _resample(images, inverse, fill, fill_mode, interpolation)


def box_mask(images, centre_x, centre_y, box_width, box_height):
  """(N, H, W, 1) float mask, 1 inside each image's box (pixel units, clipped at the edges)."""
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  cols = tf.cast(tf.range(width), tf.float32)[None, None, :]
  rows = tf.cast(tf.range(height), tf.float32)[None, :, None]
  reshape = lambda v: tf.reshape(tf.cast(v, tf.float32), [-1, 1, 1])
  inside_x = tf.abs(cols + 0.5 - reshape(centre_x)) < reshape(box_width) / 2.0
  inside_y = tf.abs(rows + 0.5 - reshape(centre_y)) < reshape(box_height) / 2.0
  return tf.cast(inside_x & inside_y, tf.float32)[..., None]


@keeps_dtype
def cutout(images, centre_x, centre_y, size, fill=128.0):
  """Fills a `size` x `size` square (pixels, per image) centred at (centre_x, centre_y)."""
  mask = box_mask(images, centre_x, centre_y, size, size)
  return images * (1.0 - mask) + tf.cast(fill, tf.float32) * mask
