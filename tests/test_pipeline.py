import numpy as np
import pytest

from bloodcell_jax.data import augment, pipeline, splits
from bloodcell_jax.data.sources import ImageSet
from bloodcell_jax.errors import UserError


def tiny_set(n=10, size=16, num_classes=3):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return ImageSet(images, labels, np.asarray([str(i) for i in range(n)]),
                  tuple("abc"[:num_classes]), name="tiny")


def test_stream_is_a_sequence_of_seeded_permutations():
  examples, epochs = pipeline.stream_indices(7, seed=1, start=0, stop=21)
  for e in range(3):
    assert sorted(examples[epochs == e].tolist()) == list(range(7))
  assert examples[:7].tolist() != examples[7:14].tolist()
  again, _ = pipeline.stream_indices(7, seed=1, start=0, stop=21)
  np.testing.assert_array_equal(examples, again)


def test_resuming_the_stream_gives_the_same_positions():
  full, full_epochs = pipeline.stream_indices(11, seed=0, start=0, stop=40)
  tail, tail_epochs = pipeline.stream_indices(11, seed=0, start=13, stop=40)
  np.testing.assert_array_equal(full[13:], tail)
  np.testing.assert_array_equal(full_epochs[13:], tail_epochs)


def test_processes_split_each_global_batch_into_disjoint_parts():
  values = np.arange(24)
  parts = [pipeline.process_slice(values, 8, p, 2) for p in range(2)]
  assert parts[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), values)


def test_train_batches_resume_exactly_and_augment_per_image():
  source = pipeline.InMemorySource(tiny_set())
  kwargs = dict(seed=3, batch_size=4, num_steps=6, augmentation="flip|brightness(0.3)")
  full = list(pipeline.train_batches(source, start_step=0, **kwargs))
  resumed = list(pipeline.train_batches(source, start_step=2, **kwargs))
  assert len(full) == 6 and len(resumed) == 4
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # Brightness offsets differ between the images of one batch.
  first = full[0]["image"]
  originals = source.data.images[pipeline.stream_indices(10, 3, 0, 4)[0]].astype(np.float32)
  offsets = [np.median(a - o) for a, o in zip(first, originals)]
  assert len(set(np.round(offsets, 3))) > 1


def test_augmentation_of_an_example_does_not_depend_on_batching_or_process():
  source = pipeline.InMemorySource(tiny_set(n=8))
  kwargs = dict(seed=5, start_step=0, augmentation="affine(rotate=0.2, zoom=0.2)|contrast(0.5)")
  whole = np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=8, num_steps=1, **kwargs)])
  halves = [np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=8, num_steps=1, process_index=p, process_count=2, **kwargs)])
            for p in range(2)]
  smaller = np.concatenate([b["image"] for b in pipeline.train_batches(
      source, batch_size=4, num_steps=2, **kwargs)])
  np.testing.assert_array_equal(whole, np.concatenate(halves))
  np.testing.assert_array_equal(whole, smaller)


@pytest.mark.parametrize("n, batch, processes", [(10, 4, 1), (10, 4, 2), (8, 8, 1), (3, 8, 2)])
def test_eval_visits_every_example_exactly_once(n, batch, processes):
  source = pipeline.InMemorySource(tiny_set(n=n))
  seen = []
  for p in range(processes):
    for b in pipeline.eval_batches(source, batch_size=batch, process_index=p,
                                   process_count=processes):
      assert b["image"].shape[0] == batch // processes
      for image, valid in zip(b["image"], b["mask"]):
        if valid:
          seen.append(next(i for i, x in enumerate(source.data.images)
                           if np.array_equal(x, image.astype(np.uint8))))
  assert sorted(seen) == list(range(n))


def test_seeded_eval_augmentation_is_repeatable_and_changes_images():
  source = pipeline.InMemorySource(tiny_set(n=4))
  spec = "flip|affine(rotate=0.5)|brightness(0.2)"
  a = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=1))["image"]
  b = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=1))["image"]
  c = next(pipeline.eval_batches(source, batch_size=4, augmentation=spec, seed=2))["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, source.data.images.astype(np.float32))


def test_zero_magnitude_affine_is_identity_and_flips_are_exact():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.constant(tiny_set(n=1).images[0], tf.float32)
  seed = tf.constant([1, 2], tf.int64)
  out = augment.parse("affine(rotate=0.0, translate=0.0, zoom=0.0)")(image, seed)
  np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-3)
  flipped = augment.parse("flip(horizontal=True, vertical=False)")
  outputs = {flipped(image, tf.constant([0, s], tf.int64)).numpy().tobytes() for s in range(20)}
  assert outputs == {image.numpy().tobytes(), image.numpy()[:, ::-1].tobytes()}


def test_quarter_turns_shifts_and_zoom_match_numpy():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pixels = tiny_set(n=1, size=9).images[0].astype(np.float32)
  image = tf.constant(pixels)
  turn = lambda a: augment.apply_affine(image, angle=a, interpolation="nearest").numpy()
  # Counter-clockwise on screen is numpy's rot90 (which rotates rows towards the top).
  np.testing.assert_array_equal(turn(np.pi / 2), np.rot90(pixels, 1))
  np.testing.assert_array_equal(turn(-np.pi / 2), np.rot90(pixels, -1))
  shifted = augment.apply_affine(image, angle=0.0, shift_x=2.0, fill_mode="constant").numpy()
  np.testing.assert_array_equal(shifted[:, 2:], pixels[:, :-2])
  np.testing.assert_array_equal(shifted[:, :2], 0.0)
  zoomed = augment.apply_affine(image, angle=0.0, scale=2.0, interpolation="nearest").numpy()
  np.testing.assert_array_equal(zoomed[4, 4], pixels[4, 4])  # the centre stays put


@pytest.mark.parametrize("spec, message", [
    ("flip|spin(3)", "unknown op 'spin'"),
    ("affine(rotate=)", "cannot parse op"),
    ("brightness(delta=0.1, gamma=2)", "bad arguments for 'brightness'"),
    ("affine(fill_mode='mirror')", "fill_mode='mirror'"),
])
def test_bad_augmentation_specs_are_one_line_errors(spec, message):
  with pytest.raises(UserError, match=message):
    augment.parse(spec, "config.augment.train")


def test_stratified_split_keeps_class_shares_and_is_seeded():
  data = tiny_set(n=300, num_classes=3)
  data.labels[:] = np.repeat([0, 1, 2], [200, 70, 30])
  train, val = splits.stratified_split(data, 0.1, seed=0)
  assert np.bincount(val.labels).tolist() == [20, 7, 3]
  assert len(set(train.ids) & set(val.ids)) == 0 and len(train) + len(val) == 300
  train2, _ = splits.stratified_split(data, 0.1, seed=0)
  np.testing.assert_array_equal(train.ids, train2.ids)


def test_split_too_small_for_every_class_is_a_user_error():
  with pytest.raises(UserError, match="val_fraction=0.1 of 10 images leaves 1 in one part"):
    splits.stratified_split(tiny_set(n=10, num_classes=3), 0.1, seed=0)


def test_balanced_class_weights_follow_the_formula():
  labels = np.repeat([0, 1, 2], [60, 30, 10])
  weights = splits.balanced_class_weights(labels, 4)
  np.testing.assert_allclose(weights, [100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10), 0.0],
                             rtol=1e-6)
