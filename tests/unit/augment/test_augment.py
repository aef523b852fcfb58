"""Augmentation ops, RandAugment, AugMix and the batch-mixing ops: semantics, PIL parity, seeds."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from bloodcell_jax.augment import image_ops, policies
from bloodcell_jax.augment import ops as augment
from bloodcell_jax.data import synthetic
from bloodcell_jax.errors import UserError
from helpers import PBC96

MAGNITUDE_OPS = [name for name in policies.LEVELS.names()
                 if name not in ("autocontrast", "equalize", "invert")]


@pytest.fixture(scope="module")
def real_images():
  """Eight real cell images (one per class) where ../shared has them, else generated cells."""
  files = sorted(glob.glob(os.path.join(PBC96, "*", "*.jpg")))
  if files:
    by_class = {}
    for f in files:
      by_class.setdefault(os.path.basename(os.path.dirname(f)), f)
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in by_class.values()])
  return synthetic.generate(8, 96, seed=1).images


def ours(op, images, *args, **kwargs):
  return np.asarray(op(tf.constant(images), *args, **kwargs))


def pil(fn, images):
  return np.stack([np.asarray(fn(Image.fromarray(x))) for x in images])


def per_image(value, n=8):
  return tf.fill([n], float(value))


# Largest difference allowed against PIL: our float arithmetic rounds once at the end,
# PIL's integer lookup tables truncate, so levels may differ by one.
@pytest.mark.parametrize("name, op, reference", [
    ("autocontrast", image_ops.autocontrast, ImageOps.autocontrast),
    ("equalize", image_ops.equalize, ImageOps.equalize),
    ("posterize3", lambda x: image_ops.posterize(x, per_image(3)),
     lambda im: ImageOps.posterize(im, 3)),
    ("solarize100", lambda x: image_ops.solarize(x, per_image(100)),
     lambda im: ImageOps.solarize(im, 100)),
    ("invert", image_ops.invert, ImageOps.invert),
    ("color0.3", lambda x: image_ops.color(x, per_image(0.3)),
     lambda im: ImageEnhance.Color(im).enhance(0.3)),
    ("contrast1.6", lambda x: image_ops.contrast(x, per_image(1.6)),
     lambda im: ImageEnhance.Contrast(im).enhance(1.6)),
    ("brightness1.4", lambda x: image_ops.brightness(x, per_image(1.4)),
     lambda im: ImageEnhance.Brightness(im).enhance(1.4)),
    ("sharpness1.9", lambda x: image_ops.sharpness(x, per_image(1.9)),
     lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
])
def test_pointwise_ops_match_pil_on_real_images(real_images, name, op, reference):
  exact = name in ("equalize", "posterize3", "solarize100", "invert")
  difference = np.abs(ours(op, real_images).astype(int) - pil(reference, real_images).astype(int))
  assert difference.max() <= (0 if exact else 1), name


def _pil_affine(coefficients):
  """PIL's Image.transform(AFFINE) maps output pixel edges; ours maps centres: shift by half."""
  a, b, c, d, e, f = coefficients
  return lambda im: im.transform(im.size, Image.AFFINE,
                                 (a, b, c - 0.5 * (a + b - 1), d, e, f - 0.5 * (d + e - 1)),
                                 resample=Image.BILINEAR, fillcolor=(128, 128, 128))


@pytest.mark.parametrize("name, op, reference", [
    ("rotate20", lambda x: image_ops.rotate(x, per_image(20.0)),
     lambda im: im.rotate(20, resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
    ("rotate-7", lambda x: image_ops.rotate(x, per_image(-7.0)),
     lambda im: im.rotate(-7, resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
    ("shear_x0.2", lambda x: image_ops.shear_x(x, per_image(0.2)),
     _pil_affine((1, 0.2, -0.2 * 47.5, 0, 1, 0))),
    ("shear_y-0.3", lambda x: image_ops.shear_y(x, per_image(-0.3)),
     _pil_affine((1, 0, 0, -0.3, 1, 0.3 * 47.5))),
    ("translate_x7.5", lambda x: image_ops.translate_x(x, per_image(7.5)),
     _pil_affine((1, 0, -7.5, 0, 1, 0))),
    ("translate_y-4", lambda x: image_ops.translate_y(x, per_image(-4.0)),
     _pil_affine((1, 0, 0, 0, 1, 4.0))),
])
def test_geometric_ops_match_pil_affine_transforms(real_images, name, op, reference):
  """Within one level on every pixel away from the fill boundary (PIL and TensorFlow treat
  the half-pixel band at the image edge differently), and on 98% of all pixels."""
  ours_ = ours(op, real_images.astype(np.float32))
  theirs = pil(reference, real_images).astype(np.float32)
  difference = np.abs(np.round(ours_) - theirs)
  assert difference[:, 16:-16, 16:-16].max() <= 1, name
  assert (difference <= 1).mean() >= 0.98, name


def test_contrast_blends_with_the_mean_intensity_not_a_histogram_count(real_images):
  flat = ours(image_ops.contrast, real_images.astype(np.float32), per_image(0.0))
  luma = real_images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  for image, mean in zip(flat, luma.mean(axis=(1, 2))):
    np.testing.assert_allclose(image, mean, atol=1e-3)


@pytest.mark.parametrize("name", MAGNITUDE_OPS)
def test_magnitude_zero_is_identity(real_images, name):
  images = tf.constant(real_images, tf.float32)
  uniforms = tf.random.stateless_uniform([8, policies.OP_UNIFORMS], [0, 1])
  out = policies.apply_level(name, images, per_image(0.0), uniforms)
  np.testing.assert_allclose(out.numpy(), real_images, atol=1e-3)


def test_policies_at_magnitude_zero_are_identity(real_images):
  seeds = np.stack([np.zeros(8), np.arange(8)], 1)
  for spec in (f"randaugment(num_ops=3, magnitude=0.0, ops={MAGNITUDE_OPS!r})",
               "augmix(severity=0.0, ops='rotate, solarize, posterize, shear_x, translate_y')"):
    out = augment.parse(spec).apply_with_seeds(real_images, seeds)["image"]
    np.testing.assert_allclose(out.numpy(), real_images, atol=1e-3, err_msg=spec)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("name", policies.LEVELS.names())
def test_ops_keep_dtype_shape_and_range_at_any_size(dtype, name):
  rng = np.random.default_rng(0)
  images = tf.constant(rng.integers(0, 256, (3, 37, 53, 3)).astype(dtype))
  uniforms = tf.constant(rng.uniform(size=(3, policies.OP_UNIFORMS)), tf.float32)
  out = policies.apply_level(name, images, tf.constant([0.3, 0.7, 1.0]), uniforms)
  assert out.dtype == images.dtype and out.shape == images.shape
  assert 0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255


STUDY_FINAL = ("randaugment(num_ops=2, magnitude=0.5)|augmix(severity=0.3)"
               "|random_brightness(0.2)|random_contrast(0.2)")


def test_each_image_gets_its_own_choices_and_a_seed_fixes_them(real_images):
  """The same picture 16 times in one batch, 16 seeds: different results (RandAugment may draw
  the same unsigned ops twice); the same seeds again: the same results."""
  images = np.repeat(real_images[:1], 16, axis=0)
  seeds = np.stack([np.full(16, 7), np.arange(16)], 1)
  for spec, distinct in (("randaugment(num_ops=2, magnitude=0.9)", 12),
                         ("augmix(severity=0.5)", 16), (STUDY_FINAL, 16)):
    pipe = augment.parse(spec)
    first = pipe.apply_with_seeds(images, seeds)["image"].numpy()
    again = pipe.apply_with_seeds(images, seeds)["image"].numpy()
    np.testing.assert_array_equal(first, again)
    assert len({x.tobytes() for x in first}) >= distinct, spec
    assert first.dtype == np.float32 and 0 <= first.min() and first.max() <= 255


def test_an_image_result_does_not_depend_on_its_batch(real_images):
  pipe = augment.parse(STUDY_FINAL)
  seeds = np.stack([np.full(8, 3), np.arange(8)], 1)
  whole = pipe.apply_with_seeds(real_images, seeds)["image"].numpy()
  alone = pipe.apply_with_seeds(real_images[5:6], seeds[5:6])["image"].numpy()
  np.testing.assert_allclose(alone[0], whole[5], atol=1e-3)


def test_randaugment_chooses_ops_uniformly_per_image():
  """With ops that each leave a signature, the choices over 800 images are near uniform."""
  images = tf.fill([800, 8, 8, 3], 100.0)
  names = ("identity", "invert", "solarize")  # 100, 155, 100 or 155 (threshold 256 (1 - m))
  uniforms = tf.random.stateless_uniform([800, policies.randaugment_uniforms(1)], [1, 2])
  out = policies.randaugment(images, uniforms, num_ops=1, magnitude=0.9, names=names)
  values = out[:, 0, 0, 0].numpy()
  assert abs((values == 155).mean() - 2 / 3) < 0.06


def test_augmix_weights_are_convex_and_the_mix_is_a_convex_combination():
  gammas = tf.random.stateless_gamma([500, 5], [0, 3], alpha=tf.fill([5], 0.5))
  weights, blend = policies.augmix_mixing_weights(gammas, width=3)
  assert np.all(weights.numpy() >= 0) and np.allclose(weights.numpy().sum(1), 1.0, atol=1e-6)
  assert np.all((0 <= blend.numpy()) & (blend.numpy() <= 1))
  # Chains of 'invert' map a constant c to c or 255 - c: any mix stays between the two.
  images = tf.fill([64, 4, 4, 3], 40.0)
  uniforms = tf.random.stateless_uniform([64, policies.augmix_uniforms(3)], [5, 6])
  out = policies.augmix(images, uniforms, tf.random.stateless_gamma([64, 5], [7, 8], alpha=1.0),
                        names=("invert",)).numpy()
  assert out.min() >= 40.0 - 1e-3 and out.max() <= 215.0 + 1e-3 and out.std() > 1.0


def test_mixup_and_cutmix_mix_labels_in_the_shares_of_the_pixels():
  rng = np.random.default_rng(0)
  n, classes = 16, 4
  images = np.where(np.arange(n)[:, None, None, None] % 2 == 0, 0.0, 200.0) * np.ones(
      (n, 20, 20, 3))
  labels = tf.constant(np.arange(n) % classes)
  seeds = np.stack([np.zeros(n), np.arange(n)], 1)
  for spec in ("mixup(alpha=0.4)", "cutmix(alpha=1.0)"):
    out = augment.parse(spec).apply_with_seeds(images, seeds, labels=labels, num_classes=classes)
    soft, mixed = out["label"].numpy(), out["image"].numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    # Image i (value 0 or 200) is mixed with image n-1-i (the other value): the share of
    # its own label is the share of its own value in the pixels.
    own = soft[np.arange(n), np.arange(n) % classes]
    own_value = images[:, 0, 0, 0]
    pixel_share = 1.0 - np.abs(mixed - own_value[:, None, None, None]).mean(axis=(1, 2, 3)) / 200
    np.testing.assert_allclose(own, pixel_share, atol=1e-4, err_msg=spec)
    assert 0.05 < own.std(), spec  # per image, not one draw for the batch
  del rng


def test_views_share_everything_but_augmix(real_images):
  pipe = augment.parse("random_brightness(0.3)|augmix(severity=0.5)|random_contrast(0.3)", views=2)
  seeds = np.stack([np.zeros(8), np.arange(8)], 1)
  out = pipe.apply_with_seeds(real_images, seeds)
  clean, views = out["image"].numpy(), out["views"].numpy()
  assert views.shape == (8, 2) + real_images.shape[1:]
  assert not np.allclose(views[:, 0], views[:, 1]) and not np.allclose(views[:, 0], clean)
  # With AugMix at severity 0 the views are the clean image: the other ops shared their draws.
  same = augment.parse("random_brightness(0.3)|augmix(severity=0.0, ops='rotate')"
                       "|random_contrast(0.3)", views=2).apply_with_seeds(real_images, seeds)
  for k in range(2):
    np.testing.assert_allclose(same["views"].numpy()[:, k], same["image"].numpy(), atol=1e-3)


def test_single_ops_apply_with_their_probability(real_images):
  images = np.repeat(real_images[:1], 200, axis=0)
  seeds = np.stack([np.zeros(200), np.arange(200)], 1)
  out = augment.parse("invert(p=0.25)").apply_with_seeds(images, seeds)["image"].numpy()
  changed = np.abs(out - images).reshape(200, -1).max(1) > 0
  assert 0.15 < changed.mean() < 0.35


@pytest.mark.parametrize("spec, views, message", [
    ("flip|spin(3)", 0, r"config.augment.train='spin': unknown augmentation op \(known: flip, "),
    ("affine(rotate=)", 0, "cannot parse op"),
    ("random_brightness(factor=0.1, gamma=2)", 0, "bad arguments for 'random_brightness'"),
    ("affine(fill_mode='mirror')", 0, "fill_mode='mirror'"),
    ("randaugment(magnitude=5)", 0, r"magnitude=5, expected a value in \[0.0, 1.0\]"),
    ("randaugment(ops='rotate, twirl')", 0, "ops='twirl': unknown magnitude op"),
    ("augmix(depth=7)", 0, "depth -1 or 1..3"),
    ("mixup(0.2)|flip", 0, "must come after every per-image op"),
    ("flip", 2, "needs exactly one augmix op"),
    ("flip|augmix(severity=0.3)|mixup(0.2)", 2, "cannot be combined with mixup or cutmix"),
])
def test_bad_specs_are_one_line_errors(spec, views, message):
  with pytest.raises(UserError, match=message):
    augment.parse(spec, "config.augment.train", views=views)


def test_random_magnitude_draws_up_to_the_magnitude_per_image():
  """brightness at magnitude m scales by 1 +- 0.9 m: fixed, two values; random, a spread within."""
  images = np.full((400, 4, 4, 3), 100.0, np.float32)
  seeds = np.stack([np.zeros(400), np.arange(400)], 1)
  spec = "randaugment(num_ops=1, magnitude=0.5, ops='brightness'{})"
  fixed = augment.parse(spec.format("")).apply_with_seeds(images, seeds)["image"].numpy()
  assert set(np.round(fixed[:, 0, 0, 0], 3)) == {55.0, 145.0}
  spread = augment.parse(spec.format(", random_magnitude=True")).apply_with_seeds(
      images, seeds)["image"].numpy()[:, 0, 0, 0]
  assert 55.0 - 1e-3 <= spread.min() and spread.max() <= 145.0 + 1e-3
  assert len(np.unique(np.round(spread, 3))) > 300
  assert abs(np.median(np.abs(spread - 100)) - 22.5) < 4


@pytest.mark.parametrize("policy", ["randaugment(num_ops=2, magnitude=0.8, p=0.3)",
                                    "augmix(severity=0.8, p=0.3)"])
def test_policies_apply_to_each_image_with_probability_p(real_images, policy):
  images = np.repeat(real_images[:1], 300, axis=0)
  seeds = np.stack([np.zeros(300), np.arange(300)], 1)
  out = augment.parse(policy).apply_with_seeds(images, seeds)["image"].numpy()
  untouched = np.abs(out - images).reshape(300, -1).max(1) == 0
  assert 0.6 < untouched.mean() < 0.8, policy  # 0.7, plus identity draws of RandAugment
