"""Augmentation pipelines: ops named in a config string, random per image, run over batches.

A pipeline is a '|'-separated list of ops with arguments, e.g.

  flip|randaugment(num_ops=2, magnitude=0.5)|augmix(severity=0.3)|random_brightness(0.2)|mixup(0.2)

An empty string is the identity. Ops:
  flip, affine                     the study's basic augmentation (Keras's factors)
  random_brightness, random_contrast   Keras's RandomBrightness / RandomContrast
  randaugment, augmix              the policies (bloodcell_jax.data.policies)
  identity, autocontrast, equalize, invert, rotate, shear_x, shear_y, translate_x, translate_y,
  solarize, solarize_add, posterize, color, contrast, brightness, sharpness, cutout
                                   one op at `magnitude` in [0, 1] with probability `p`
  shifts                           distribution shifts (bloodcell_jax.data.shifts), chosen per
                                   image, at random strengths
  hed_jitter, scale_jitter         stain amounts in HED space; magnification
  mixup, cutmix                    batch-level: mix each image with its partner in the batch
                                   (the batch reversed) and return soft labels; last in the list

`OPS` is the registry of these names; `@OPS.register(name)` adds an op factory (its arguments
as written in the string, returning an `Op`).

Randomness: each image's draws come from one stateless seed (the input pipeline derives
it from the config seed, the epoch and the example index), so an image's augmentation
depends on nothing else and the same seed always gives the same output.
"""

import ast
import dataclasses
import math
from typing import Callable, Optional, Tuple

import tensorflow as tf

from bloodcell_jax.augment import image_ops, policies, shifts
from bloodcell_jax.errors import UserError
from bloodcell_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Op:
  """One pipeline step over a batch, with the random numbers it needs per image.

  `apply(images, uniforms, gammas)` for per-image ops; ops that mix the batch take and
  return labels too: `apply(images, labels, uniforms, gammas) -> (images, labels)`.
  """
  name: str
  apply: Callable
  num_uniforms: int = 0
  gamma_alphas: Tuple[float, ...] = ()
  mixes_batch: bool = False


# Op name -> factory(*args, **kwargs) -> Op, the arguments as written in the pipeline string.
OPS = Registry("augmentation op", where="augmentation")


@dataclasses.dataclass(frozen=True)
class _Step:
  op: Op
  uniforms: slice
  gammas: slice

  def __call__(self, images, uniforms, gammas):
    return self.op.apply(images, uniforms[:, self.uniforms], gammas[:, self.gammas])


class Pipeline:
  """Composed ops with their draws laid out side by side.

  With `views=K`, the output also has K AugMix views of each image (for the Jensen-Shannon
  consistency loss): the ops before `augmix` run once and are shared, `augmix` runs once
  per view with its own draws and not at all on the clean image, and the ops after it run
  on the clean image and every view with the same draws.
  """

  def __init__(self, ops, views: int = 0, where: str = "augmentation"):
    per_image = [op for op in ops if not op.mixes_batch]
    mixing = [op for op in ops if op.mixes_batch]
    if mixing and ops[-len(mixing):] != mixing:
      raise UserError(f"{where}: {', '.join(op.name for op in mixing)} mix the batch and must "
                      "come after every per-image op")
    self.views = views
    self._uniform_count, self._alphas = 0, []
    if views and mixing:
      raise UserError(f"{where}: the Jensen-Shannon loss (config.loss.jsd_weight) compares each "
                      "image with its views; it cannot be combined with mixup or cutmix")
    if views:
      names = [op.name for op in per_image]
      if names.count("augmix") != 1:
        raise UserError(f"{where}: the Jensen-Shannon loss (config.loss.jsd_weight) needs "
                        f"exactly one augmix op in the pipeline, found {names.count('augmix')}")
      split = names.index("augmix")
      self._prefix = [self._allocate(op) for op in per_image[:split]]
      self._view_steps = [self._allocate(per_image[split]) for _ in range(views)]
      self._suffix = [self._allocate(op) for op in per_image[split + 1:]]
    else:
      self._prefix = [self._allocate(op) for op in per_image]
      self._view_steps, self._suffix = [], []
    self._mixing = [self._allocate(op) for op in mixing]

  def _allocate(self, op: Op) -> _Step:
    u, g = self._uniform_count, len(self._alphas)
    self._uniform_count += op.num_uniforms
    self._alphas.extend(op.gamma_alphas)
    return _Step(op, slice(u, u + op.num_uniforms), slice(g, g + len(op.gamma_alphas)))

  @property
  def mixes_batch(self) -> bool:
    return bool(self._mixing)

  @property
  def is_identity(self) -> bool:
    return not (self._prefix or self._view_steps or self._suffix or self._mixing)

  def draws(self, seed):
    """One image's random numbers from its stateless seed: (uniforms (R,), gammas (G,))."""
    uniforms = tf.random.stateless_uniform([self._uniform_count], seed)
    if not self._alphas:
      return uniforms, tf.zeros([0])
    gammas = tf.random.stateless_gamma(
        [len(self._alphas)], tf.random.experimental.stateless_fold_in(seed, 1),
        alpha=tf.constant(self._alphas))
    return uniforms, gammas

  def __call__(self, images, uniforms, gammas, labels=None, num_classes: Optional[int] = None):
    """Augments a batch (uint8 or float in [0, 255]): {"image"} float32 (+ {"views"} (N, K, H,
    W, C)) (+ {"label"}, soft when mixed). Ops may pass uint8 along; the output is float32."""
    for step in self._prefix:
      images = _clip(step(images, uniforms, gammas))
    out = {}
    if self._view_steps:
      n = tf.shape(images)[0]
      stacked = tf.concat([_float(images)] + [_float(s(images, uniforms, gammas))
                                              for s in self._view_steps], 0)
      tiled = lambda t: tf.tile(t, [len(self._view_steps) + 1, 1])
      for step in self._suffix:
        stacked = _clip(step(stacked, tiled(uniforms), tiled(gammas)))
      images = stacked[:n]
      views = tf.reshape(stacked[n:], tf.concat([[self.views, n], tf.shape(images)[1:]], 0))
      out["views"] = tf.transpose(views, [1, 0, 2, 3, 4])
    images = _float(images)
    if self._mixing:
      if labels is None or not num_classes:
        raise ValueError("mixing ops need labels and num_classes")
      labels = tf.one_hot(labels, num_classes)
      for step in self._mixing:
        images, labels = step.op.apply(images, labels, uniforms[:, step.uniforms],
                                       gammas[:, step.gammas])
        images = _clip(images)
    out["image"] = images
    if labels is not None:
      out["label"] = labels
    return out

  def apply_with_seeds(self, images, seeds, labels=None, num_classes=None):
    """The pipeline on a batch with one seed (2,) per image: for previews, tests, offline copies."""
    uniforms, gammas = tf.map_fn(
        self.draws, tf.convert_to_tensor(seeds, tf.int64),
        fn_output_signature=(tf.TensorSpec([self._uniform_count], tf.float32),
                             tf.TensorSpec([len(self._alphas)], tf.float32)))
    return self(images, uniforms, gammas, labels=labels, num_classes=num_classes)


def _clip(images):
  return images if images.dtype == tf.uint8 else tf.clip_by_value(images, 0.0, 255.0)


def _float(images):
  return tf.cast(images, tf.float32)


def parse(spec: str, where: str = "augmentation", views: int = 0) -> Pipeline:
  """Builds the pipeline from its string; errors name the bad part and `where` it came from."""
  ops = [_parse_op(part.strip(), where) for part in spec.split("|") if part.strip()]
  return Pipeline(ops, views=views, where=where)


def per_image_part(spec: str, where: str = "augmentation") -> str:
  """`spec` without its batch-mixing ops (mixup, cutmix)."""
  parts = [part.strip() for part in spec.split("|") if part.strip()]
  return "|".join(part for part in parts if not _parse_op(part, where).mixes_batch)


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
  factory = OPS.get(name, where)
  try:
    return factory(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise UserError(f"{where}: bad arguments for '{name}': {e}") from None


def _check_range(name, value, low, high):
  if not low <= value <= high:
    raise ValueError(f"{name}={value}, expected a value in [{low}, {high}]")
  return value


def _check_fill_mode(fill_mode: str) -> str:
  if fill_mode.lower() not in ("reflect", "wrap", "constant", "nearest"):
    raise ValueError(f"fill_mode={fill_mode!r}, expected reflect, wrap, constant or nearest")
  return fill_mode.lower()


def _flip_axis(images, coins, axis):
  """Reverses `axis` of the images whose coin is true, as one gather."""
  size = tf.shape(images)[axis]
  ascending = tf.range(size)[None, :]
  index = tf.where(coins[:, None], size - 1 - ascending, ascending)
  return tf.gather(images, index, axis=axis, batch_dims=1)


@OPS.register("flip")
def flip(horizontal: bool = True, vertical: bool = True) -> Op:
  """Random horizontal and/or vertical flips, each with probability 1/2."""
  def apply(images, u, g):
    if horizontal:
      images = _flip_axis(images, u[:, 0] < 0.5, 2)
    if vertical:
      images = _flip_axis(images, u[:, 1] < 0.5, 1)
    return images
  return Op("flip", apply, num_uniforms=2)


@OPS.register("affine")
def affine(rotate: float = 0.0, translate: float = 0.0, zoom: float = 0.0,
           fill_mode: str = "reflect", fill_value: float = 0.0,
           interpolation: str = "bilinear") -> Op:
  """Rotation, translation and zoom about the centre in one resampling.

  Keras's conventions: `rotate` is a fraction of a full turn (0.1 = up to 36 degrees
  either way), `translate` a fraction of the image size, `zoom` the largest relative
  change of scale.
  """
  fill_mode = _check_fill_mode(fill_mode)

  def apply(images, u, g):
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    d = 2.0 * u - 1.0
    return image_ops.affine(_float(images), d[:, 0] * rotate * 2.0 * math.pi,
                            1.0 + d[:, 1] * zoom, d[:, 2] * translate * width,
                            d[:, 3] * translate * height, fill=fill_value, fill_mode=fill_mode,
                            interpolation=interpolation)
  return Op("affine", apply, num_uniforms=4)


@OPS.register("random_brightness")
def random_brightness(factor: float) -> Op:
  """Keras's RandomBrightness: adds an offset uniform in [-factor, factor] x 255."""
  def apply(images, u, g):
    return _float(images) + tf.reshape((2.0 * u[:, 0] - 1.0) * factor * 255.0, [-1, 1, 1, 1])
  return Op("random_brightness", apply, num_uniforms=1)


@OPS.register("random_contrast")
def random_contrast(factor: float) -> Op:
  """Keras's RandomContrast: deviations from each channel's mean scaled by a factor uniform in
  [1 - factor, 1 + factor]."""
  def apply(images, u, g):
    images = _float(images)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    scale = tf.reshape(1.0 + (2.0 * u[:, 0] - 1.0) * factor, [-1, 1, 1, 1])
    return (images - mean) * scale + mean
  return Op("random_contrast", apply, num_uniforms=1)


def _single(name):
  def factory(magnitude: float = 0.5, p: float = 1.0, fill: float = 128.0,
              fill_mode: str = "constant") -> Op:
    _check_range("magnitude", magnitude, 0.0, 1.0)
    _check_range("p", p, 0.0, 1.0)
    fill_mode = _check_fill_mode(fill_mode)

    def apply(images, u, g):
      level = tf.fill(tf.shape(u[:, :1])[:1], float(magnitude))
      skip = tf.cast(u[:, 0] >= p, tf.int32)  # 0: apply, 1: leave the image
      return policies.apply_chosen((name, "identity"), skip, images, level, u[:, 1:], fill,
                                   fill_mode)
    return Op(name, apply, num_uniforms=1 + policies.OP_UNIFORMS)
  factory.__doc__ = f"`{name}` at `magnitude` in [0, 1], applied with probability `p`."
  return factory


for _name in policies.LEVELS.names():
  OPS.register(_name, _single(_name))


def _sometimes(op: Op, p: float) -> Op:
  """`op` on each image with probability `p`: it runs only on the images whose draw chose it."""
  _check_range("p", p, 0.0, 1.0)
  if p == 1.0:
    return op

  def apply(images, u, g):
    images = _float(images)
    chosen = tf.where(u[:, 0] < p)[:, 0]
    augmented = op.apply(tf.gather(images, chosen), tf.gather(u[:, 1:], chosen),
                         tf.gather(g, chosen))
    return tf.tensor_scatter_nd_update(images, chosen[:, None], _float(augmented))
  return dataclasses.replace(op, apply=apply, num_uniforms=op.num_uniforms + 1)


def _op_names(ops, default):
  if ops is None:
    return default
  names = [s.strip() for s in ops.split(",")] if isinstance(ops, str) else list(ops)
  return policies.check_ops(names)


@OPS.register("randaugment")
def randaugment(num_ops: int = 2, magnitude: float = 0.5, magnitude_std: float = 0.0,
                random_magnitude: bool = False, ops=None, fill: float = 128.0,
                fill_mode: str = "constant", p: float = 1.0) -> Op:
  """RandAugment: `num_ops` ops chosen per image from `ops` (default: the paper's 14), at
  `magnitude`, or uniform in [0, magnitude] with `random_magnitude` (Keras's semantics);
  applied to each image with probability `p`."""
  _check_range("magnitude", magnitude, 0.0, 1.0)
  names = _op_names(ops, policies.RANDAUGMENT_OPS)
  fill_mode = _check_fill_mode(fill_mode)

  def apply(images, u, g):
    return policies.randaugment(images, u, num_ops=num_ops, magnitude=magnitude,
                                magnitude_std=magnitude_std,
                                random_magnitude=random_magnitude, names=names, fill=fill,
                                fill_mode=fill_mode)
  return _sometimes(Op("randaugment", apply,
                        num_uniforms=policies.randaugment_uniforms(num_ops)), p)


@OPS.register("augmix")
def augmix(severity: float = 0.3, width: int = 3, depth: int = -1, alpha: float = 1.0,
           all_ops: bool = False, ops=None, fill: float = 128.0,
           fill_mode: str = "constant", p: float = 1.0) -> Op:
  """AugMix: `width` chains of `depth` ops (-1: 1 to 3), Dirichlet(alpha) chain weights, a
  Beta(alpha, alpha) blend with the image; ops from the paper's list (`all_ops` adds color,
  contrast, brightness and sharpness); applied to each image with probability `p`."""
  _check_range("severity", severity, 0.0, 1.0)
  if width < 1 or depth == 0 or depth > 3 or alpha <= 0:
    raise ValueError(f"width={width}, depth={depth}, alpha={alpha}: expected width >= 1, "
                     "depth -1 or 1..3, alpha > 0")
  names = _op_names(ops, policies.AUGMIX_ALL_OPS if all_ops else policies.AUGMIX_OPS)
  fill_mode = _check_fill_mode(fill_mode)

  def apply(images, u, g):
    return policies.augmix(images, u, g, severity=severity, width=width, depth=depth,
                           names=names, fill=fill, fill_mode=fill_mode)
  return _sometimes(Op("augmix", apply, num_uniforms=policies.augmix_uniforms(width),
                        gamma_alphas=policies.augmix_gamma_alphas(width, alpha)), p)


def _shift_names(ops):
  names = [n.strip() for n in ops.split(",")] if isinstance(ops, str) else list(ops or ())
  for name in names:
    if name not in shifts.SHIFTS:
      raise ValueError(shifts.SHIFTS.unknown(name, "ops"))
  return names or shifts.SHIFTS.names()


@OPS.register("shifts")
def shifts_op(ops=None, severity: float = 1.0, num_ops: int = 1, p: float = 1.0) -> Op:
  """Distribution shifts of another microscope, camera, stain or slide
  (bloodcell_jax.data.shifts): `num_ops` in a row, each chosen per image from `ops`
  (default: all), at a strength uniform in [0, `severity`] (1: the robustness
  benchmark's severest level); applied to each image with probability `p`."""
  _check_range("severity", severity, 0.0, 1.0)
  names = _shift_names(ops)
  per_op = 2 + shifts.max_uniforms(names)

  def apply(images, u, g):
    images = _float(images)
    for k in range(num_ops):
      draws = u[:, k * per_op:(k + 1) * per_op]
      choice = tf.minimum(tf.cast(draws[:, 0] * len(names), tf.int32), len(names) - 1)
      images = shifts.apply_chosen(names, choice, images, draws[:, 1] * severity, draws[:, 2:])
    return images
  return _sometimes(Op("shifts", apply, num_uniforms=num_ops * per_op), p)


@OPS.register("hed_jitter")
def hed_jitter(sigma: float = 0.05, bias: float = 0.05, p: float = 1.0) -> Op:
  """Stain augmentation in HED space (Tellez et al. 2019): each image's haematoxylin, eosin
  and DAB amounts times a factor uniform in [1 - sigma, 1 + sigma], plus an optical density
  uniform in [-bias, bias]; applied to each image with probability `p`."""
  _check_range("sigma", sigma, 0.0, 1.0)
  _check_range("bias", bias, 0.0, 1.0)

  def apply(images, u, g):
    d = 2.0 * u - 1.0
    return shifts.hed_perturb(_float(images), 1.0 + sigma * d[:, :3], bias * d[:, 3:6])
  return _sometimes(Op("hed_jitter", apply, num_uniforms=6), p)


@OPS.register("scale_jitter")
def scale_jitter(min_scale: float = 0.5, max_scale: float = 2.0, p: float = 1.0) -> Op:
  """Another magnification: the image zoomed about its centre by a factor log-uniform in
  [min_scale, max_scale], the field beyond the image filled with its background colour;
  applied to each image with probability `p`."""
  if not 0 < min_scale <= max_scale:
    raise ValueError(f"min_scale={min_scale}, max_scale={max_scale}: expected "
                     "0 < min_scale <= max_scale")

  def apply(images, u, g):
    scale = tf.exp(math.log(min_scale) + u[:, 0] * math.log(max_scale / min_scale))
    zero = tf.zeros_like(scale)
    return shifts.warp_on_background(_float(images), scale, zero, zero)
  return _sometimes(Op("scale_jitter", apply, num_uniforms=1), p)


def _beta(g):
  """Beta(alpha, alpha) from two Gamma(alpha) draws."""
  return g[:, 0] / tf.maximum(g[:, 0] + g[:, 1], 1e-30)


def _mix_labels(labels, share):
  """share * own label + (1 - share) * the partner's (the batch reversed)."""
  share = share[:, None]
  return share * labels + (1.0 - share) * tf.reverse(labels, [0])


@OPS.register("mixup")
def mixup(alpha: float = 0.2, p: float = 1.0) -> Op:
  """MixUp (Zhang et al. 2018): image and label blended with the partner's by lam ~ Beta(alpha,
  alpha), per image, with probability `p`."""
  if alpha <= 0:
    raise ValueError(f"alpha={alpha}, expected > 0")

  def apply(images, labels, u, g):
    share = tf.where(u[:, 0] < p, _beta(g), 1.0)
    images = _mix_images(_float(images), share)
    return images, _mix_labels(labels, share)
  return Op("mixup", apply, num_uniforms=1, gamma_alphas=(float(alpha),) * 2, mixes_batch=True)


def _mix_images(images, share):
  share = tf.reshape(share, [-1, 1, 1, 1])
  return share * images + (1.0 - share) * tf.reverse(images, [0])


@OPS.register("cutmix")
def cutmix(alpha: float = 1.0, p: float = 1.0) -> Op:
  """CutMix (Yun et al. 2019): a box of area share (1 - lam), lam ~ Beta(alpha, alpha), pasted
  from the partner; labels mixed by the box's actual area after clipping at the edges."""
  if alpha <= 0:
    raise ValueError(f"alpha={alpha}, expected > 0")

  def apply(images, labels, u, g):
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    side = tf.sqrt(1.0 - _beta(g))
    side = tf.where(u[:, 0] < p, side, 0.0)
    mask = image_ops.box_mask(images, u[:, 1] * width, u[:, 2] * height, side * width,
                              side * height)
    images = _float(images)
    images = images + mask * (tf.reverse(images, [0]) - images)
    share = 1.0 - tf.reduce_mean(mask, axis=[1, 2, 3])
    return images, _mix_labels(labels, share)
  return Op("cutmix", apply, num_uniforms=3, gamma_alphas=(float(alpha),) * 2, mixes_batch=True)
