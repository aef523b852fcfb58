"""The affine and flip ops: identity at zero magnitude, exact flips, quarter turns, shifts
and zoom as numpy computes them."""

import numpy as np

from bloodcell_jax.augment import image_ops
from bloodcell_jax.augment import ops as augment
from helpers.images import tiny_set


def test_zero_magnitude_affine_is_identity_and_flips_are_exact():
  image = tiny_set(n=1).images[0].astype(np.float32)
  images = np.repeat(image[None], 20, axis=0)
  seeds = np.stack([np.zeros(20), np.arange(20)], 1)
  out = augment.parse("affine(rotate=0.0, translate=0.0, zoom=0.0)").apply_with_seeds(
      images, seeds)["image"]
  np.testing.assert_allclose(out.numpy(), images, atol=1e-3)
  flipped = augment.parse("flip(horizontal=True, vertical=False)").apply_with_seeds(
      images, seeds)["image"].numpy()
  assert {x.tobytes() for x in flipped} == {image.tobytes(), image[:, ::-1].tobytes()}


def test_quarter_turns_shifts_and_zoom_match_numpy():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pixels = tiny_set(n=1, size=9).images[0].astype(np.float32)
  image = tf.constant(pixels[None])

  def affine(angle=0.0, scale=1.0, shift_x=0.0, **kwargs):
    vector = lambda v: tf.constant([v], tf.float32)
    return image_ops.affine(image, vector(angle), vector(scale), vector(shift_x), vector(0.0),
                            **kwargs).numpy()[0]
  turn = lambda a: affine(angle=a, interpolation="nearest")
  # Counter-clockwise on screen is numpy's rot90 (which rotates rows towards the top).
  np.testing.assert_array_equal(turn(np.pi / 2), np.rot90(pixels, 1))
  np.testing.assert_array_equal(turn(-np.pi / 2), np.rot90(pixels, -1))
  shifted = affine(shift_x=2.0, fill_mode="constant")
  np.testing.assert_array_equal(shifted[:, 2:], pixels[:, :-2])
  np.testing.assert_array_equal(shifted[:, :2], 0.0)
  zoomed = affine(scale=2.0, interpolation="nearest")
  np.testing.assert_array_equal(zoomed[4, 4], pixels[4, 4])  # the centre stays put
