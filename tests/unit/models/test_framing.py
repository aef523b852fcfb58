"""Framing finds the nucleus by colour and re-cuts the image about it, ignoring red cells."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.errors import UserError
from bloodcell_jax.models import framing

SIZE = 64
PLASMA = (254.0, 230.0, 206.0)  # PBC's background
NUCLEUS = (90.0, 40.0, 140.0)  # absorbs green, passes blue
RED_CELL = (225.0, 150.0, 165.0)  # absorbs green and blue alike


def disk(image, centre, radius, colour):
  rows, cols = np.mgrid[:SIZE, :SIZE]
  inside = np.hypot(rows - centre[0], cols - centre[1]) <= radius
  image[inside] = colour
  return image


def smear(nucleus_centre=None, nucleus_radius=8.0):
  """A field of plasma with red cells at the corners and, optionally, one nucleus."""
  image = np.empty((SIZE, SIZE, 3), np.float32)
  image[:] = PLASMA
  for centre in ((8, 8), (8, 55), (55, 8), (55, 55)):
    disk(image, centre, 7, RED_CELL)
  if nucleus_centre is not None:
    disk(image, nucleus_centre, nucleus_radius, NUCLEUS)
  return image


def geometry(image):
  cy, cx, radius = jax.jit(framing.nucleus_geometry)(jnp.asarray(image)[None])
  return float(cy[0]), float(cx[0]), float(radius[0])


def test_the_nucleus_is_found_among_red_cells():
  cy, cx, radius = geometry(smear((26.0, 38.0), 8.0))
  assert abs(cy - 26.0) < 0.5 and abs(cx - 38.0) < 0.5
  # A uniform disk's radius of gyration is its radius over sqrt(2).
  assert radius == pytest.approx(8.0 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("radius", [8.0, 12.0, 20.0])  # zoom 2.2, 1.5, 0.9
def test_framing_centres_the_nucleus_at_one_size(radius):
  framed = np.asarray(jax.jit(framing.frame_cells)(jnp.asarray(smear((28.0, 36.0), radius))[None]))
  cy, cx, spread = geometry(framed[0])
  centre = (SIZE - 1) / 2
  assert abs(cy - centre) < 1.0 and abs(cx - centre) < 1.0
  # Within 2%: one pass alone leaves it 3-6% small (the resampled edge is softer).
  assert spread == pytest.approx(framing.NUCLEUS_SPREAD * SIZE, rel=0.02)


def test_a_shrunk_image_is_surrounded_by_its_background():
  framed = np.asarray(framing.frame_cells(jnp.asarray(smear((31.5, 31.5), 24.0))[None]))[0]
  np.testing.assert_allclose(framed[0, 0], PLASMA, atol=1.0)
  assert framed.min() >= 0.0 and framed.max() <= 255.0 + 1e-3


def test_an_image_of_plasma_alone_is_left_as_it_is():
  image = np.empty((SIZE, SIZE, 3), np.float32)
  image[:] = PLASMA
  np.testing.assert_allclose(np.asarray(framing.frame_cells(jnp.asarray(image)[None]))[0], image,
                             atol=1e-3)


def test_the_zoom_is_bounded():
  framed = np.asarray(framing.frame_cells(jnp.asarray(smear((31.5, 31.5), 1.5))[None]))[0]
  _, _, spread = geometry(framed)
  assert spread <= 1.5 / np.sqrt(2) * framing.ZOOM_RANGE[1] * 1.2


def test_a_model_frames_its_input_and_rejects_unknown_framings():
  image = jnp.asarray(smear((24.0, 40.0), 8.0))[None]
  framed = models.get_model("cnn", filters=(4, 4, 4, 4), dense_units=4, framing="nucleus")
  plain = models.get_model("cnn", filters=(4, 4, 4, 4), dense_units=4)
  variables = plain.init(jax.random.PRNGKey(0), image)
  np.testing.assert_allclose(framed.apply(variables, image),
                             plain.apply(variables, framing.frame_cells(image)), rtol=1e-5)
  with pytest.raises(UserError, match="config.model.framing='cell'"):
    models.get_model("cnn", framing="cell")
  with pytest.raises(UserError, match="config.model.framing='cell'"):
    models.get_model("efficientnetv2-b0", framing="cell")
