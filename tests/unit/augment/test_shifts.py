"""Distribution shifts: identity at strength 0, stronger with strength, deterministic, dtype
and range; the augmentation ops built on them."""

import numpy as np
import pytest
import tensorflow as tf

from bloodcell_jax.augment import ops as augment
from bloodcell_jax.augment import shifts
from bloodcell_jax.data import synthetic
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation.robustness import shift_uniforms

SIZE = 48


@pytest.fixture(scope="module")
def cells():
  """Drawn cells (uint8), big enough for the blurs and occlusions to show."""
  return synthetic.generate(6, SIZE, seed=3).images


def run(name, images, strength, seed=0):
  return shifts.apply(name, images, strength, shift_uniforms(name, len(images), seed)).numpy()


@pytest.mark.parametrize("name", shifts.SHIFTS.names())
def test_shift_is_identity_at_zero_and_grows_with_strength(cells, name):
  np.testing.assert_allclose(run(name, cells, 0.0), cells.astype(np.float32), atol=1e-3)
  change = [np.abs(run(name, cells, shifts.strength_of(s)) - cells).mean()
            for s in shifts.SEVERITIES]
  assert change[0] > 0.1, f"{name}: severity 1 changes nothing ({change[0]:.3f})"
  assert all(b >= a - 1e-3 for a, b in zip(change, change[1:])), (name, change)
  assert change[-1] > 1.5 * change[0], (name, change)


@pytest.mark.parametrize("name", shifts.SHIFTS.names())
def test_shift_is_deterministic_in_range_and_per_image(cells, name):
  out = run(name, cells, 0.6)
  assert out.dtype == np.float32 and out.shape == cells.shape
  assert out.min() >= 0.0 and out.max() <= 255.0
  np.testing.assert_array_equal(out, run(name, tf.constant(cells, tf.float32), 0.6))
  # Strength per image: image 0 at 0 is untouched, and the others do not notice.
  mixed = shifts.apply(name, cells, np.array([0.0] + [0.6] * 5, np.float32),
                       shift_uniforms(name, len(cells), 0)).numpy()
  np.testing.assert_allclose(mixed[0], cells[0], atol=1e-3)
  np.testing.assert_allclose(mixed[1:], out[1:], atol=1e-3)


def test_every_family_of_the_benchmark_is_there():
  assert set(shifts.families()) == {"illumination", "contrast", "colour", "focus", "noise",
                                    "compression", "resolution", "magnification", "occlusion"}


def test_stain_perturbation_round_trips_and_moves_colour(cells):
  ones, zeros = np.ones((len(cells), 3), np.float32), np.zeros((len(cells), 3), np.float32)
  same = shifts.hed_perturb(tf.constant(cells, tf.float32), ones, zeros).numpy()
  np.testing.assert_allclose(same, cells, atol=0.05)
  more_eosin = shifts.hed_perturb(tf.constant(cells, tf.float32), ones,
                                  zeros + np.array([0.0, 0.2, 0.0], np.float32)).numpy()
  # Eosin absorbs green: more of it darkens green more than red.
  drop = cells.astype(np.float32) - more_eosin
  assert drop[..., 1].mean() > 2 * drop[..., 0].mean() > 0


@pytest.mark.parametrize("spec", ["shifts(severity=1.0)", "shifts(ops='defocus, stain', num_ops=2)",
                                  "hed_jitter(sigma=0.2, bias=0.1)", "scale_jitter(0.5, 2.0)"])
def test_augmentation_ops_are_seeded_per_image(cells, spec):
  pipeline = augment.parse(spec)
  seeds = np.arange(12).reshape(6, 2)
  a = pipeline.apply_with_seeds(cells, seeds)["image"].numpy()
  b = pipeline.apply_with_seeds(cells, seeds)["image"].numpy()
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - cells).mean() > 0.5
  # An image's augmentation does not depend on the rest of the batch.
  alone = pipeline.apply_with_seeds(cells[2:3], seeds[2:3])["image"].numpy()
  np.testing.assert_allclose(alone[0], a[2], atol=1e-3)


def test_jitters_at_zero_are_the_identity(cells):
  seeds = np.arange(12).reshape(6, 2)
  for spec in ("hed_jitter(sigma=0.0, bias=0.0)", "scale_jitter(1.0, 1.0)",
               "shifts(severity=0.0)"):
    out = augment.parse(spec).apply_with_seeds(cells, seeds)["image"].numpy()
    np.testing.assert_allclose(out, cells, atol=0.05, err_msg=spec)


@pytest.mark.parametrize("spec, message", [
    ("shifts(ops='defocus, warp')", r"bad arguments for 'shifts': ops='warp': unknown shift "
     r"\(known: brighter, "),
    ("shifts(severity=2)", r"severity=2, expected a value in \[0.0, 1.0\]"),
    ("scale_jitter(2.0, 1.0)", "0 < min_scale <= max_scale"),
])
def test_bad_shift_specs_are_one_line_errors(spec, message):
  with pytest.raises(UserError, match=message):
    augment.parse(spec, "config.augment.train")
